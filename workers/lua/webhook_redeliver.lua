-- Deliver a given-up webhook again: out of the owner's failed deliveries, pending again with a new window of
-- `retry for` seconds from now, its record kept until it is delivered or given up again, and onto the stream.
-- ARGV[3..]: job id, owner ('' = no API keys).
-- Returns OK, or MISSING (not among the owner's failed deliveries, or its job is gone).
local id, owner = ARGV[3], ARGV[4]
local job = K.job .. id
local failed = failed_deliveries(owner)
if not redis.call('ZSCORE', failed, id) then return 'MISSING' end
redis.call('ZREM', failed, id)
if redis.call('HGET', job, 'webhook_status') ~= 'failed' then return 'MISSING' end
redis.call('HSET', job, 'webhook_status', 'pending', 'webhook_since', stamp(NOW))
redis.call('PERSIST', job)
redis.call('PERSIST', K.parts .. id)
redis.call('XADD', K.webhooks, '*', 'job', id)
return 'OK'
