-- Append one part of a streaming run, under the run's claim: a worker that lost its claim appends nothing.
-- ARGV[3..]: id, claim token, the part (JSON), the most parts a job may have.
-- Returns the part's index (from 0); STALE when the claim is not the caller's or the job is not RUNNING;
-- TOO_MANY when the job has the most parts already (nothing appended); MISSING.
local id, token, part, most = ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
local current = redis.call('HMGET', K.job .. id, 'status', 'claim')
if not current[1] then return 'MISSING' end
if current[2] ~= token or current[1] ~= S.RUNNING then return 'STALE' end
if redis.call('LLEN', K.parts .. id) >= most then return 'TOO_MANY' end
return redis.call('RPUSH', K.parts .. id, part) - 1
