-- Record a new QUEUED job and push its Celery message: one step, so either both happen or neither.
-- ARGV[3..]: id, model, max queued (0 = no cap), then field/value pairs (input, owner).
-- Returns the job's created_at, or FULL when the model's queue is at its cap. Run again with the same id (a retry
-- of a call whose answer was lost) it changes nothing and returns the created_at already recorded.
local id, model, cap = ARGV[3], ARGV[4], tonumber(ARGV[5])
local job = K.job .. id
local recorded = redis.call('HGET', job, 'created_at')
if recorded then return recorded end
local waiting = redis.call('ZCARD', K.queued .. model) + redis.call('ZCARD', K.parked .. model)
if cap > 0 and waiting >= cap then return 'FULL' end
local created = stamp(NOW)
redis.call('HSET', job, 'id', id, 'model', model, 'status', 'QUEUED', 'created_at', created, 'attempts', 0)
if #ARGV > 5 then redis.call('HSET', job, unpack(ARGV, 6)) end
send(id, model)
wake(model)
return created
