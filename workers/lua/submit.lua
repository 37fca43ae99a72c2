-- Record a new QUEUED job and push its Celery message: one step, so either both happen or neither; the job goes
-- into its owner's index (sm:owned) in the same step.
-- ARGV[3..]: id, model, max queued (0 = no cap), max not started per owner (0 = no cap), owner ('' = none), the
-- idempotency key's Redis key ('' = none), the request's digest, seconds the key is kept, then field/value pairs
-- (input, and the job's options).
-- Returns the job's created_at; FULL when the model's queue is at its cap, KEY_FULL when the owner has that many
-- jobs of the model not started yet (either counted as a refused queue_full, keys.py: sm:platform_counts);
-- {EXISTING, job fields ...} when the idempotency key already made a job of the same digest (nothing is sent),
-- CONFLICT when it made one of another digest. Run again with the same id (a retry of a call whose answer was lost)
-- it changes nothing and returns the created_at already recorded.
local id, model, cap, owner_cap, owner = ARGV[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local idem, digest, idem_for = ARGV[8], ARGV[9], tonumber(ARGV[10])
local job = K.job .. id
local recorded = redis.call('HGET', job, 'created_at')
if recorded then return recorded end
if idem ~= '' then
  local made = redis.call('HMGET', idem, 'job', 'digest')
  if made[1] and redis.call('EXISTS', K.job .. made[1]) == 1 then
    if made[2] ~= digest then return 'CONFLICT' end
    redis.call('HSET', K.job .. made[1], 'replayed', 1)  -- a caller was told of it: withdraw.lua leaves it
    local reply = {'EXISTING'}
    for _, v in ipairs(redis.call('HGETALL', K.job .. made[1])) do table.insert(reply, v) end
    return reply
  end
end
local waiting = redis.call('ZCARD', K.sent .. model) + redis.call('ZCARD', K.parked .. model)
if cap > 0 and waiting >= cap then refused('queue_full') return 'FULL' end
local mine = unstarted(model, owner)
if mine and owner_cap > 0 and redis.call('ZCARD', mine) >= owner_cap then
  refused('queue_full')
  return 'KEY_FULL'
end
local created = stamp(NOW)
move(id, S.QUEUED)
redis.call('HINCRBY', K.counts .. model, 'submitted', 1)
redis.call('HSET', job, 'id', id, 'model', model, 'created_at', created, 'attempts', 0, 'owner', owner)
if #ARGV > 10 then redis.call('HSET', job, unpack(ARGV, 11)) end
set_deadline(id)
set_rank(id, model)
if idem ~= '' then
  redis.call('HSET', idem, 'job', id, 'digest', digest)
  redis.call('EXPIRE', idem, idem_for)
  redis.call('HSET', job, 'idem', idem)
end
if mine then redis.call('ZADD', mine, NOW, id) end
local index = owned(owner)  -- the owner's jobs (GET /v1/jobs), by the created_at as recorded; kept bounded here:
redis.call('ZADD', index, created, id)  -- those past the retention and all but the newest OWNED_KEPT dropped
redis.call('ZREMRANGEBYSCORE', index, '-inf', '(' .. stamp(NOW - RETENTION))
redis.call('ZREMRANGEBYRANK', index, 0, -OWNED_KEPT - 1)
send(id, model)
wake(model)
return created
