-- Parked jobs that have waited past the model's queue timeout while no replica of it was starting fail with
-- no_replica. A job waits since it was created, or since it was last taken back from a lost worker or a failed
-- replica (requeued_at), or since the model's latest start ended (a replica of it turned READY or failed to start),
-- whichever came last: a start is bounded by its own timeout (up to an hour), and a wait for it does not count.
-- ARGV[3..]: model, queue timeout (seconds), limit. Returns the ids failed.
local model, timeout, limit = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local expired = {}
local started = tonumber(redis.call('HGET', K.start_failure .. model, 'at') or '0')  -- the latest start's end
for _, rid in ipairs(redis.call('SMEMBERS', K.replicas .. model)) do
  local r = redis.call('HMGET', K.replica .. rid, 'state', 'ready_at')
  if r[1] == 'STARTING' then return expired end
  started = math.max(started, tonumber(r[2] or '0') or 0)
end
if started > NOW - timeout then return expired end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.parked .. model, '-inf', NOW - timeout, 'LIMIT', 0, 4 * limit)) do
  if #expired < limit and tonumber(redis.call('HGET', K.job .. id, 'requeued_at') or '0') <= NOW - timeout then
    fail(id, model, 'no_replica', 'no replica of ' .. model .. ' was ready within ' .. ARGV[4] .. ' s', false)
    table.insert(expired, id)
  end
end
return expired
