-- The owner's given-up webhook deliveries, newest first (those older than the retention, or whose job is gone,
-- are dropped on the way).
-- ARGV[3..]: owner ('' = no API keys), how many at most.
-- Returns a JSON array of {job, model, url, attempts, last_error, failed_at}.
local owner, limit = ARGV[3], tonumber(ARGV[4])
local failed = failed_deliveries(owner)
redis.call('ZREMRANGEBYSCORE', failed, '-inf', NOW - RETENTION)
local found = {}
local listed = redis.call('ZREVRANGE', failed, 0, limit - 1, 'WITHSCORES')
for i = 1, #listed, 2 do
  local id = listed[i]
  local f = redis.call('HMGET', K.job .. id, 'model', 'webhook', 'webhook_attempts', 'webhook_error', 'webhook_status')
  if f[5] == 'failed' then
    table.insert(found, {job = id, model = f[1], url = f[2], attempts = tonumber(f[3]) or 0,
                         last_error = f[4] or '', failed_at = tonumber(listed[i + 1])})
  else
    redis.call('ZREM', failed, id)
  end
end
if #found == 0 then return '[]' end
return cjson.encode(found)
