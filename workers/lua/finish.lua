-- Commit a run's outcome under its claim: the final status and fields, the slot given back (one parked job is
-- sent to it), the replica's service time folded into the model's moving average, the lease dropped.
-- The first result on the replica of a job that waited for its cold start ends that cold start (lib.lua
-- first_result).
-- The exchange is judged on the replica: an answer clears its count of failed exchanges in a row; one that timed
-- out (the replica alive, the request slow) adds to it.
-- ARGV[3..]: id, claim token, status (SUCCEEDED or FAILED), service seconds ('' = none), average weight,
-- timed out ('1' or '0'), then field/value pairs (output, or error).
-- Returns OK; STALE when the claim is no longer this task's (the reaper took the job back); MISSING; or the
-- status found (CANCELLED while it ran: the slot is given back all the same; the status itself when this call
-- runs again after its answer was lost).
local id, token, status, service, weight = ARGV[3], ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7])
local timed_out = ARGV[8] == '1'
local current = redis.call('HMGET', K.job .. id, 'status', 'claim', 'model')
if not current[1] then return 'MISSING' end
if current[2] ~= token then return 'STALE' end
local model = current[3]
if current[1] ~= S.RUNNING then
  if free_slot(id) then dispatch(model, 1) end
  retire(id)
  return current[1]
end
local replica = free_slot(id)
if replica then
  judged(replica, timed_out, 'no answer within the request timeout')
  first_result(id, replica)
end
local fields = {}
for i = 9, #ARGV do table.insert(fields, ARGV[i]) end
conclude(id, model, status, fields)
if service ~= '' then fold(model, 'service_time', service, weight) end
dispatch(model, 1)
return 'OK'
