-- Parked jobs that have waited past the model's queue timeout fail with no_replica.
-- ARGV[3..]: model, queue timeout (seconds), limit. Returns the ids failed.
local model, timeout, limit = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local expired = redis.call('ZRANGEBYSCORE', K.parked .. model, '-inf', NOW - timeout, 'LIMIT', 0, limit)
for _, id in ipairs(expired) do
  fail(id, model, 'no_replica', 'no replica of ' .. model .. ' was ready within ' .. ARGV[4] .. ' s', false)
end
return expired
