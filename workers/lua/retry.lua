-- The replica failed under a run (connection lost, or no answer within the request timeout): it leaves routing,
-- the slot is given back, and the job runs at once on another free slot, is parked until one frees, or fails
-- with replica_failed (into the dead letters) after its last attempt. Run again after its answer was lost, it
-- finds the job no longer on the failed replica and changes nothing.
-- ARGV[3..]: id, claim token, the failed replica, reason, max attempts, concurrency, lease seconds, worker.
-- Returns {'RUNNING', replica, endpoint, job fields ...}, PARKED, FAILED, STALE, MISSING, or the status found.
local id, token, failed, reason, max_attempts = ARGV[3], ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7])
local concurrency, lease, worker = tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10]
local job = K.job .. id
local current = redis.call('HMGET', job, 'status', 'claim', 'model', 'slot', 'attempts')
if not current[1] then return 'MISSING' end
if current[2] ~= token then return 'STALE' end
local model, slot = current[3], current[4]
if current[1] == 'RUNNING' and slot and slot ~= failed then  -- this call again: it already moved
  return running_reply(id, {slot, redis.call('HGET', K.replica .. slot, 'endpoint')})
end
if redis.call('HGET', K.replica .. failed, 'state') == 'READY' then
  redis.call('HSET', K.replica .. failed, 'state', 'FAILED', 'reason', reason)
end
if slot == failed then free_slot(id) end
if current[1] ~= 'RUNNING' then
  if not redis.call('HGET', job, 'slot') then retire(id) end
  return current[1]
end
local attempts = tonumber(current[5] or '0')
if attempts >= max_attempts then
  fail(id, model, 'replica_failed', 'replica failed on all ' .. attempts .. ' attempts; last: ' .. reason, true)
  return 'FAILED'
end
redis.call('SREM', K.running .. model, id)
redis.call('HSET', job, 'status', 'QUEUED', 'requeued_at', stamp(NOW))
local moved = acquire(id, model, concurrency)
if moved then return begin_run(id, model, token, worker, lease, moved) end
park(id, model)
return 'PARKED'
