-- A task claims a QUEUED job for itself, unless another task holds a live claim on it.
-- KEYS: job, leases zset; ARGV: token, now, lease seconds, worker
-- Returns the job's fields (HGETALL) once claimed, else why not: its status, CLAIMED or MISSING.
local current = redis.call('HMGET', KEYS[1], 'status', 'claim', 'lease_until', 'id')
if not current[1] then return 'MISSING' end
if current[1] ~= 'QUEUED' then return current[1] end
if current[2] and current[2] ~= '' and tonumber(current[3] or '0') > tonumber(ARGV[2]) then return 'CLAIMED' end
local expires = tonumber(ARGV[2]) + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'claim', ARGV[1], 'lease_until', expires, 'worker', ARGV[4])
redis.call('ZADD', KEYS[2], expires, current[4])
return redis.call('HGETALL', KEYS[1])
