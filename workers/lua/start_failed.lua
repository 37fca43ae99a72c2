-- A replica could not start: FAILED with the reason, the model's start failure recorded and, if the model says so
-- and no replica of it is READY (a busy one would serve them), its parked jobs failed with the reason. Jobs not
-- parked yet fail when they park (start.lua). Counted (keys.py: sm:counts) in the same step.
-- ARGV[3..]: leader token, id, model, reason, fail waiting jobs ('1' or '0').
-- Returns how many jobs failed, or -1 if the caller no longer leads.
local token, id, model, reason, fail_waiting = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7] == '1'
if not leads(token) then return -1 end
redis.call('HINCRBY', K.counts .. model, 'start_failed', 1)
if redis.call('EXISTS', K.replica .. id) == 1 then
  redis.call('HSET', K.replica .. id, 'state', 'FAILED', 'reason', reason)
  index_ready(id)
end
redis.call('HSET', K.start_failure .. model, 'at', stamp(NOW), 'reason', reason)
redis.call('SET', K.start_ended .. model, stamp(NOW))
if not fail_waiting or ready_replicas(model) > 0 then return 0 end
local waiting = redis.call('ZRANGE', K.parked .. model, 0, -1)
for _, job in ipairs(waiting) do
  fail(job, model, 'replica_start_failed', 'no replica of ' .. model .. ' could start: ' .. reason, false)
end
return #waiting
