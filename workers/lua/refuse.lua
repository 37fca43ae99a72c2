-- A worker that does not serve a job's model fails the job rather than drop its message (sent again, it would come
-- back to a worker that cannot run it): only a QUEUED job that no live claim holds.
-- ARGV[3..]: id, error code, error message. Returns FAILED, CLAIMED, MISSING, or the status found.
local id, code, text = ARGV[3], ARGV[4], ARGV[5]
local current = redis.call('HMGET', K.job .. id, 'status', 'claim', 'lease_until', 'model')
if not current[1] then return 'MISSING' end
if current[1] ~= S.QUEUED then return current[1] end
if current[2] and tonumber(current[3] or '0') > NOW then return 'CLAIMED' end
fail(id, current[4], code, text, false)
return S.FAILED
