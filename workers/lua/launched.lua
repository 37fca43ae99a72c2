-- The leader records where a started replica runs, and when its cold start's first stages ended (placed: it had a
-- host; created: its process or container ran), as seconds before now by the leader's clock ('' = not known).
-- ARGV[3..]: leader token, id, endpoint, handle, host, placed (seconds ago), created (seconds ago).
-- Returns 1; 0 if the caller no longer leads (the replica is left to the leader, which adopts it or stops it as a
-- stray); -1 if its record is gone (the caller stops what it started).
local token, id, endpoint, handle, host = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local placed_ago, created_ago = ARGV[8], ARGV[9]
local replica = K.replica .. id
if redis.call('EXISTS', replica) == 0 then return -1 end
if not leads(token) then return 0 end
index_ready(id, true)  -- its host may change: out of the old host's index, back in under the new one
redis.call('HSET', replica, 'endpoint', endpoint, 'handle', handle, 'host', host)
index_ready(id)
local started = tonumber(redis.call('HGET', replica, 'started_at'))
local placed = stage_end(placed_ago, started)
if placed then redis.call('HSET', replica, 'placed_at', stamp(placed)) end
local created = stage_end(created_ago, placed or started)
if created then redis.call('HSET', replica, 'created_at', stamp(created)) end
return 1
