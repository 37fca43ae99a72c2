-- Cancel a QUEUED job (it never runs) or a RUNNING one best-effort: its result will be refused, and the slot it
-- holds is given back when its call returns, or by the reaper if its worker is gone.
-- ARGV[3..]: id, then optionally why: an error code and message the job keeps.
-- Returns OK, MISSING, or the status of a job already finished.
local id, code, text = ARGV[3], ARGV[4], ARGV[5]
local current = redis.call('HMGET', K.job .. id, 'status', 'model')
if not current[1] then return 'MISSING' end
if current[1] ~= S.QUEUED and current[1] ~= S.RUNNING then return current[1] end
local fields = {'cancelled_while', current[1]}
if code then
  table.insert(fields, 'error')
  table.insert(fields, cjson.encode({code = code, message = text}))
end
conclude(id, current[2], S.CANCELLED, fields)
return 'OK'
