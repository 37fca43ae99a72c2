-- Record a new QUEUED job, unless its model already has the most jobs it may have waiting.
-- KEYS: job, queued zset, scale list; ARGV: max queued (0 = no limit), created at, id, model, then field/value pairs
if tonumber(ARGV[1]) > 0 and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[1]) then return 'FULL' end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('RPUSH', KEYS[3], ARGV[4])
redis.call('LTRIM', KEYS[3], -100, -1)
return 'OK'
