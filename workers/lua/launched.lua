-- The leader records where a started replica runs. ARGV[3..]: leader token, id, endpoint, handle, host.
-- Returns 1; 0 if the caller no longer leads (the replica is left to the leader, which adopts it or stops it as a
-- stray); -1 if its record is gone (the caller stops what it started).
local token, id, endpoint, handle, host = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
if redis.call('EXISTS', K.replica .. id) == 0 then return -1 end
if not leads(token) then return 0 end
redis.call('HSET', K.replica .. id, 'endpoint', endpoint, 'handle', handle, 'host', host)
return 1
