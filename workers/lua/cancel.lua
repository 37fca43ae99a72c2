-- Cancel a QUEUED job (it never runs) or a RUNNING one best-effort: its result will be refused, and the slot it
-- holds is given back when its call returns, or by the reaper if its worker is gone.
-- ARGV[3..]: id. Returns OK, MISSING, or the status of a job already finished.
local id = ARGV[3]
local current = redis.call('HMGET', K.job .. id, 'status', 'model')
if not current[1] then return 'MISSING' end
if current[1] ~= 'QUEUED' and current[1] ~= 'RUNNING' then return current[1] end
conclude(id, current[2], 'CANCELLED', {'cancelled_while', current[1]})
return 'OK'
