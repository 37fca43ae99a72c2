-- The replica failed under a run (connection lost, or no answer within the request timeout): it leaves routing,
-- the slot is given back, and the job runs at once on another free slot, is parked until one frees, or fails
-- with replica_failed (into the dead letters) after its last attempt.
-- ARGV[3..]: id, claim token, reason, max attempts, concurrency, lease seconds, worker.
-- Returns {'RUNNING', replica, endpoint, job fields ...}, PARKED, FAILED, STALE, MISSING, or the status found.
local id, token, reason, max_attempts = ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
local concurrency, lease, worker = tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9]
local job = K.job .. id
local current = redis.call('HMGET', job, 'status', 'claim', 'model', 'slot', 'attempts')
if not current[1] then return 'MISSING' end
if current[2] ~= token then return 'STALE' end
local model = current[3]
if current[4] and redis.call('HGET', K.replica .. current[4], 'state') == 'READY' then
  redis.call('HSET', K.replica .. current[4], 'state', 'FAILED', 'reason', reason)
end
free_slot(id)
if current[1] ~= 'RUNNING' then
  redis.call('ZREM', K.leases, id)
  return current[1]
end
local attempts = tonumber(current[5] or '0')
if attempts >= max_attempts then
  fail(id, model, 'replica_failed', 'replica failed on all ' .. attempts .. ' attempts; last: ' .. reason, true)
  return 'FAILED'
end
redis.call('SREM', K.running .. model, id)
redis.call('HSET', job, 'status', 'QUEUED', 'requeued_at', stamp(NOW))
local slot = acquire(id, model, concurrency)
if slot then return begin_run(id, model, token, worker, lease, slot) end
park(id, model)
return 'PARKED'
