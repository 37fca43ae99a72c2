-- Run a finished job again (POST /v1/jobs/<id>/retry): a FAILED (expired included) or CANCELLED job is QUEUED
-- again under the same id, its attempts kept, its output, error, claim and end cleared, out of the dead letters,
-- its webhook's delivery state cleared (it is delivered again when the job ends again), its record kept again (no
-- expiry), its ttl and rank counted afresh, its parts cleared (the next run's are numbered on from them: run and
-- parts_base), and its message sent as a submit's is (start.lua parks it if no slot is free).
-- Counted against the model's queue cap and the owner's share of it, as a submit is.
-- ARGV[3..]: id, max queued (0 = no cap), max not started per owner (0 = no cap).
-- Returns OK; FULL or KEY_FULL (as submit.lua, and counted as it counts them); HELD when a run cancelled while it
-- ran still holds its slot (its call has not returned yet); REVOKED for a job whose Celery task was revoked (each
-- worker drops a message of that task id for as long as it remembers the revoke); MISSING; or the status of a job
-- that cannot be run again (QUEUED, RUNNING, SUCCEEDED).
local id, cap, owner_cap = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local job = K.job .. id
local current = redis.call('HMGET', job, 'status', 'model', 'owner', 'slot', 'error')
if not current[1] then return 'MISSING' end
if current[1] ~= S.FAILED and current[1] ~= S.CANCELLED then return current[1] end
if current[4] then return 'HELD' end
if current[5] and cjson.decode(current[5]).code == 'revoked' then return 'REVOKED' end
local model, owner = current[2], current[3]
local waiting = redis.call('ZCARD', K.sent .. model) + redis.call('ZCARD', K.parked .. model)
if cap > 0 and waiting >= cap then refused('queue_full') return 'FULL' end
local mine = unstarted(model, owner)
if mine and owner_cap > 0 and redis.call('ZCARD', mine) >= owner_cap then
  refused('queue_full')
  return 'KEY_FULL'
end
move(id, S.QUEUED)
redis.call('HDEL', job, 'output', 'error', 'finished_at', 'started_at', 'replica', 'cancelled_while', 'claim',
           'lease_until', 'webhook_status', 'webhook_attempts', 'webhook_error', 'webhook_since')
redis.call('ZREM', K.webhook_retry, id)
redis.call('ZREM', failed_deliveries(owner), id)
redis.call('HSET', job, 'requeued_at', stamp(NOW))
set_deadline(id)
set_rank(id, model)
redis.call('PERSIST', job)
redis.call('HINCRBY', job, 'run', 1)
redis.call('HINCRBY', job, 'parts_base', redis.call('LLEN', K.parts .. id))
redis.call('DEL', K.done .. id, K.parts .. id, K.parts_taken .. id)
redis.call('LREM', K.dead, 0, id)
if mine then redis.call('ZADD', mine, NOW, id) end
send(id, model)
wake(model)
return 'OK'
