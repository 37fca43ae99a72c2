-- A task starts its job: claims it, takes a free slot on the READY replica with the most free slots and marks it
-- RUNNING, all at once. With no free slot the job is parked instead, keeping no claim: a wait holds nothing, and
-- the job is sent again when a slot frees or a replica turns READY. So is a job outranked: as many better-ranked
-- jobs (priority, then age) are sent as there are free slots, and they take them.
-- ARGV[3..]: id, claim token, lease seconds, worker, fail on a start failure ('1' or '0'), the worker's host (a
-- replica there is preferred).
-- Returns {'RUNNING', replica, endpoint, job fields ...}; else PARKED, FAILED (past its ttl: expired; or a replica
-- start failed since the job was created and none is READY), CLAIMED (another live task holds it), MISSING, or the job's status.
local id, token, lease, worker = ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]
local fail_on_start, near = ARGV[7] == '1', ARGV[8]
local job = K.job .. id
local current = redis.call('HMGET', job, 'status', 'claim', 'lease_until', 'model', 'slot', 'created_at')
local status, claim, model = current[1], current[2], current[4]
if not status then return 'MISSING' end
if status == S.RUNNING and claim == token then  -- this call again, after its answer was lost
  return running_reply(id, {current[5], redis.call('HGET', K.replica .. current[5], 'endpoint')})
end
if status ~= S.QUEUED then return status end
if claim and claim ~= token and tonumber(current[3] or '0') > NOW then return 'CLAIMED' end
if overdue(id) then  -- past its ttl: it never runs
  expire(id, model)
  return S.FAILED
end
local slot = nil
if not outranked(id, model) then slot = acquire(id, model, nil, near) end
if slot then
  return begin_run(id, model, token, worker, lease, slot)
end
local reason = start_failure_since(model, tonumber(current[6]))
if fail_on_start and reason and ready_replicas(model) == 0 then
  fail(id, model, 'replica_start_failed', 'no replica of ' .. model .. ' could start: ' .. reason, false)
  return S.FAILED
end
park(id, model)
return 'PARKED'
