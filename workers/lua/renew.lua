#!lua flags=allow-oom
-- Extend the leases of the claims a worker holds, while their job is QUEUED or RUNNING or still holds a slot
-- (a job cancelled while it ran keeps its slot, and its lease, until its call returns).
-- It runs past Redis's memory bound (it only rewrites leases, growing nothing): a lease left to lapse there would
-- hand a healthy running job to the reaper and throw its answer away.
-- ARGV[3..]: lease seconds, then job id and claim token pairs. Returns how many were renewed.
local lease = tonumber(ARGV[3])
local renewed = 0
for i = 4, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local current = redis.call('HMGET', K.job .. id, 'claim', 'status', 'slot')
  if current[1] == token and (current[2] == S.QUEUED or current[2] == S.RUNNING or current[3]) then
    redis.call('HSET', K.job .. id, 'lease_until', stamp(NOW + lease))
    redis.call('ZADD', K.leases, NOW + lease, id)
    renewed = renewed + 1
  end
end
return renewed
