-- Record one attempt to deliver a job's webhook, and take its entry off the stream (acknowledged and deleted): the
-- job's webhook is delivered, or waits in the retry set for its next attempt, or, once that would come after
-- `retry for` seconds from the start of its delivery, is given up (into the owner's failed deliveries). A job
-- delivered or given up keeps its record the retention from then.
-- ARGV[3..]: stream entry id, job id, delivered ('1' or '0'), the error ('' when delivered), seconds until the
-- next attempt, retry for (seconds), the finished_at of the end attempted ('' = not checked).
-- Returns DELIVERED, RETRY, FAILED; or DROPPED when the job is gone or no longer waits for a delivery (run again,
-- or resubmitted: its next end is delivered anew), or has ended again since the attempted end (its new end has an
-- entry of its own).
local entry, id, delivered, text = ARGV[3], ARGV[4], ARGV[5] == '1', ARGV[6]
local delay, retry_for = tonumber(ARGV[7]), tonumber(ARGV[8])
local job = K.job .. id
redis.call('XACK', K.webhooks, K.deliverers, entry)
redis.call('XDEL', K.webhooks, entry)
local current = redis.call('HMGET', job, 'webhook_status', 'webhook_since', 'owner', 'slot', 'finished_at', 'model')
if current[1] ~= 'pending' then return 'DROPPED' end
if ARGV[9] ~= '' and tonumber(current[5] or '0') ~= tonumber(ARGV[9]) then return 'DROPPED' end
redis.call('HINCRBY', job, 'webhook_attempts', 1)
local settled = 'DELIVERED'
if delivered then
  redis.call('HSET', job, 'webhook_status', 'delivered')
  redis.call('HDEL', job, 'webhook_error')
else
  redis.call('HSET', job, 'webhook_error', text)
  if NOW + delay <= tonumber(current[2]) + retry_for then
    redis.call('ZADD', K.webhook_retry, NOW + delay, id)
    redis.call('HINCRBY', K.counts .. current[6], 'webhook:retry', 1)
    return 'RETRY'
  end
  redis.call('HSET', job, 'webhook_status', 'failed')
  local failed = failed_deliveries(current[3])
  redis.call('ZADD', failed, NOW, id)
  redis.call('ZREMRANGEBYSCORE', failed, '-inf', NOW - RETENTION)
  settled = 'FAILED'
end
redis.call('HINCRBY', K.counts .. current[6], settled == 'FAILED' and 'webhook:given_up' or 'webhook:delivered', 1)
if not current[4] then  -- a held slot: retired once given back
  redis.call('EXPIRE', job, RETENTION)
  redis.call('EXPIRE', K.parts .. id, RETENTION)  -- a streamed job's parts go with its record
end
return settled
