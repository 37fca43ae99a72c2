-- A QUEUED job that no live task holds, and whose Celery message is neither waiting nor being run, gets sent
-- again (a worker died between receiving its message and claiming it). Duplicates are harmless: only one task
-- can claim the job. KEYS: job, queued zset; ARGV: job id, now
local current = redis.call('HMGET', KEYS[1], 'status', 'claim', 'lease_until')
if current[1] ~= 'QUEUED' then return 0 end
if current[2] and current[2] ~= '' and tonumber(current[3] or '0') > tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[1], 'requeued_at', ARGV[2])
return 1
