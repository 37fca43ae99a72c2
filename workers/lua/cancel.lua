-- Cancel a QUEUED job (it never runs) or a RUNNING one best-effort: its result will be refused, and the slot it
-- holds is given back when its call returns, or by the reaper if its worker is gone.
-- ARGV[3..]: id, the owner whose job it must be ('*': anyone's), then optionally why: an error code and message
-- the job keeps.
-- Returns {OK, or the status of a job already finished, then the job's record as it is then but its input (field,
-- value, ...)}, or {MISSING} (also for another owner's job).
local id, owner, code, text = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local current = redis.call('HMGET', K.job .. id, 'status', 'model', 'owner')
if not current[1] or (owner ~= '*' and (current[3] or '') ~= owner) then return {'MISSING'} end
local answer = current[1]
if answer == S.QUEUED or answer == S.RUNNING then
  local fields = {'cancelled_while', current[1]}
  if code then
    table.insert(fields, 'error')
    table.insert(fields, cjson.encode({code = code, message = text}))
  end
  conclude(id, current[2], S.CANCELLED, fields)
  answer = 'OK'
end
local reply = {answer}
local record = redis.call('HGETALL', K.job .. id)
for i = 1, #record, 2 do
  if record[i] ~= 'input' then
    reply[#reply + 1] = record[i]
    reply[#reply + 1] = record[i + 1]
  end
end
return reply
