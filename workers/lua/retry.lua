-- A call to a replica failed under a run (connection lost, no answer in time, busy until the deadline). A replica
-- that is gone (it failed a readiness probe too), or failed this many exchanges in a row, leaves routing: FAILED,
-- stamped, stopped once the slots of its other jobs are given back. The slot is given back (to a parked job, if
-- the replica stays), and the job runs at once on a free slot of another replica, is parked until one frees, or
-- fails with replica_failed (into the dead letters) after its last attempt; a job that gave parts of a streamed
-- output fails interrupted. Run again after its answer was lost,
-- it finds the job no longer on the failed replica and changes nothing.
-- ARGV[3..]: id, claim token, the failed replica, reason, gone ('1' or '0'), max attempts, lease seconds, worker,
-- the worker's host (a replica there is preferred).
-- Returns {'RUNNING', replica, endpoint, job fields ...}, PARKED, FAILED, STALE, MISSING, or the status found.
local id, token, failed, reason, gone = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7] == '1'
local max_attempts, lease, worker, near = tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10], ARGV[11]
local job = K.job .. id
local current = redis.call('HMGET', job, 'status', 'claim', 'model', 'slot', 'attempts')
if not current[1] then return 'MISSING' end
if current[2] ~= token then return 'STALE' end
local model, slot = current[3], current[4]
if current[1] == S.RUNNING and slot and slot ~= failed then  -- this call again: it already moved
  return running_reply(id, {slot, redis.call('HGET', K.replica .. slot, 'endpoint')})
end
if slot == failed then
  if gone then condemn(failed, reason) else judged(failed, true, reason) end
  free_slot(id)
  if redis.call('HGET', K.replica .. failed, 'state') == 'READY' then dispatch(model, 1) end
end
if current[1] ~= S.RUNNING then
  if not redis.call('HGET', job, 'slot') then retire(id) end
  return current[1]
end
if streamed(id) then  -- a run again would repeat the parts it gave
  fail(id, model, 'interrupted', 'its replica failed after it gave parts of its output; last: ' .. reason, true)
  return S.FAILED
end
local attempts = tonumber(current[5] or '0')
if attempts >= max_attempts then
  fail(id, model, 'replica_failed', 'replica failed on all ' .. attempts .. ' attempts; last: ' .. reason, true)
  return S.FAILED
end
requeue(id, model)
local moved = acquire(id, model, failed, near)
if moved then return begin_run(id, model, token, worker, lease, moved) end
park(id, model)
return 'PARKED'
