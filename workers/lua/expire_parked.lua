-- Parked jobs that have waited past the model's queue timeout while no replica of it was starting fail with
-- no_replica. A job waits since it was created, or since it was last taken back from a lost worker or a failed
-- replica (requeued_at), or since the model's latest start ended (start_ended: a replica turned READY, failed to
-- start, or was stopped while STARTING), whichever came last: a start is bounded by its own timeout (up to an
-- hour), and a wait for it does not count. So with on_start_failure = "wait", jobs wait while starts go on.
-- ARGV[3..]: model, queue timeout (seconds), limit. Returns the ids failed.
local model, timeout, limit = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local expired = {}
for _, rid in ipairs(redis.call('SMEMBERS', K.replicas .. model)) do
  if redis.call('HGET', K.replica .. rid, 'state') == 'STARTING' then return expired end
end
if tonumber(redis.call('GET', K.start_ended .. model) or '0') > NOW - timeout then return expired end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.parked .. model, '-inf', NOW - timeout, 'LIMIT', 0, 4 * limit)) do
  if #expired < limit and tonumber(redis.call('HGET', K.job .. id, 'requeued_at') or '0') <= NOW - timeout then
    fail(id, model, 'no_replica', 'no replica of ' .. model .. ' was ready within ' .. ARGV[4] .. ' s', false)
    table.insert(expired, id)
  end
end
return expired
