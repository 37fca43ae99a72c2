-- Take back a job whose submit answer was lost, unless a worker already took it (it runs, or it ran once and waits
-- again) or an idempotent replay answered it to another caller: the record, its message and the idempotency key it
-- made go.
-- ARGV[3..]: id. Returns WITHDRAWN, NONE (never recorded), or the status of a job that stays.
local id = ARGV[3]
local job = K.job .. id
local current = redis.call('HMGET', job, 'status', 'claim', 'model', 'sends', 'attempts', 'push', 'idem', 'replayed')
if not current[1] then return 'NONE' end
if current[1] ~= S.QUEUED or current[2] or tonumber(current[5] or '0') > 0 or current[8] then return current[1] end
local model = current[3]
local taken = 0
for n = 1, tonumber(current[4] or '0') do
  taken = taken + redis.call('LREM', K.celery .. model, 0, message(id, model, id .. '.' .. n))
end
if taken > 0 and current[6] then redis.call('ZADD', K.withdrawn .. model, current[6], id) end  -- for resend.lua
leave_queue(id, model)
if current[7] and redis.call('HGET', current[7], 'job') == id then redis.call('DEL', current[7]) end
redis.call('DEL', job)
return 'WITHDRAWN'
