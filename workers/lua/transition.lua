-- Move a job to a new status if its current status allows it (and, if given, the caller's claim is current).
-- A job runs only on a replica slot it holds: RUNNING needs the slot field (set by acquire; the replica).
-- KEYS: job, queued zset, running set, done list, leases zset
-- ARGV: new status, allowed old statuses (comma separated), retention seconds, now, expected claim ('' = any),
--       then field/value pairs to set
local current = redis.call('HMGET', KEYS[1], 'status', 'claim', 'id', 'slot')
local status, claim, id, slot = current[1], current[2], current[3], current[4]
if not status then return false end
if not string.find(',' .. ARGV[2] .. ',', ',' .. status .. ',', 1, true) then return status end
if ARGV[5] ~= '' and claim ~= ARGV[5] then return 'STALE' end
if ARGV[1] == 'RUNNING' and not slot then return 'NOSLOT' end
redis.call('HSET', KEYS[1], 'status', ARGV[1])
if #ARGV > 5 then redis.call('HSET', KEYS[1], unpack(ARGV, 6)) end
if ARGV[1] == 'RUNNING' then
  redis.call('HSET', KEYS[1], 'replica', slot)
  redis.call('HINCRBY', KEYS[1], 'attempts', 1)
  redis.call('ZREM', KEYS[2], id)
  redis.call('SADD', KEYS[3], id)
elseif ARGV[1] == 'QUEUED' then
  redis.call('SREM', KEYS[3], id)
  redis.call('ZADD', KEYS[2], ARGV[4], id)
else
  redis.call('HINCRBY', KEYS[1], 'commits', 1)
  redis.call('ZREM', KEYS[2], id)
  redis.call('SREM', KEYS[3], id)
  redis.call('ZREM', KEYS[5], id)
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  redis.call('RPUSH', KEYS[4], 1)
  redis.call('EXPIRE', KEYS[4], ARGV[3])
end
return 'OK'
