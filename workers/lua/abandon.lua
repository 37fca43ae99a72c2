-- The janitor's pass over a model no longer served (gone from the models file): its waiting jobs (QUEUED, with a
-- message out or parked) that waited over the grace (a rolling deploy may be adding the model: sent, or created if
-- parked, that long ago) fail with model_removed and stay readable until the retention ends. A RUNNING job is
-- left to its worker, which commits it; if its lease runs out, the reaper parks it and it fails here. Once the
-- model has no job and no replica record left (the sweep stops and removes its replicas), it is forgotten with
-- its Celery queue (every message still in it is of a finished job) and its push count (and withdrawn pushes).
-- ARGV[3..]: model, grace (seconds), limit. Returns {1 if the model was forgotten else 0, the ids failed ...}.
local model, grace, limit = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local text = 'model ' .. model .. ' is no longer served (it is not in the models file)'
local failed = {}
for _, waiting in ipairs({K.sent .. model, K.parked .. model}) do
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', waiting, '-inf', NOW - grace, 'LIMIT', 0, limit - #failed)) do
    if redis.call('HGET', K.job .. id, 'status') == S.QUEUED then
      fail(id, model, 'model_removed', text, false)
      table.insert(failed, id)
    else
      forget_waiting(id, model)
    end
  end
  if #failed >= limit then return {0, unpack(failed)} end
end
if redis.call('ZCARD', K.sent .. model) + redis.call('ZCARD', K.parked .. model)
   + redis.call('SCARD', K.running .. model) + redis.call('SCARD', K.replicas .. model) > 0 then
  return {0, unpack(failed)}
end
redis.call('DEL', K.celery .. model, K.pushes .. model, K.withdrawn .. model)
redis.call('SREM', K.models, model)
return {1, unpack(failed)}
