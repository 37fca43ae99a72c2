-- The reaper: a job whose lease ran out goes back to QUEUED, or to FAILED after its last attempt.
-- KEYS: job, leases zset, queued zset, running set, done list, dead list, wake list
-- ARGV: job id, now, max attempts, retention seconds, error JSON for a job out of attempts, slot set prefix
local current = redis.call('HMGET', KEYS[1], 'status', 'lease_until', 'attempts', 'slot')
local status = current[1]
if not status then redis.call('ZREM', KEYS[2], ARGV[1]) return 'GONE' end
if tonumber(current[2] or '0') > tonumber(ARGV[2]) then return 'LIVE' end
redis.call('ZREM', KEYS[2], ARGV[1])
if current[4] then  -- the lost worker held a replica slot for it: free the slot
  redis.call('SREM', ARGV[6] .. current[4], ARGV[1])
  redis.call('HDEL', KEYS[1], 'slot')
  redis.call('RPUSH', KEYS[7], 1)
end
if status == 'QUEUED' then
  redis.call('HDEL', KEYS[1], 'claim')
  redis.call('HSET', KEYS[1], 'requeued_at', ARGV[2])
  return 'REQUEUE'
end
if status ~= 'RUNNING' then return status end
redis.call('SREM', KEYS[4], ARGV[1])
if tonumber(current[3] or '0') >= tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], 'status', 'FAILED', 'error', ARGV[5], 'finished_at', ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'commits', 1)
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  redis.call('RPUSH', KEYS[5], 1)
  redis.call('EXPIRE', KEYS[5], ARGV[4])
  redis.call('LPUSH', KEYS[6], ARGV[1])
  redis.call('LTRIM', KEYS[6], 0, 9999)
  return 'DEAD'
end
redis.call('HSET', KEYS[1], 'status', 'QUEUED', 'requeued_at', ARGV[2])
redis.call('HDEL', KEYS[1], 'claim')
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
return 'REQUEUE'
