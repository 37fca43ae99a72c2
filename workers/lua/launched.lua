-- The leader records where a started replica runs. ARGV[3..]: leader token, id, endpoint, handle.
-- Returns 1, or 0 if the caller no longer leads or the record is gone (the caller then stops what it started).
local token, id, endpoint, handle = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if not leads(token) or redis.call('EXISTS', K.replica .. id) == 0 then return 0 end
redis.call('HSET', K.replica .. id, 'endpoint', endpoint, 'handle', handle)
return 1
