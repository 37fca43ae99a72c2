-- The janitor's pass over the deadlines: waiting (QUEUED) jobs not started within their ttl fail with expired,
-- sent or parked alike (a sent one's message then finds it FAILED: it never runs).
-- ARGV[3..]: limit. Returns id, model, owner of each job failed.
local limit = tonumber(ARGV[3])
local expired = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.deadlines, '-inf', NOW, 'LIMIT', 0, limit)) do
  local current = redis.call('HMGET', K.job .. id, 'status', 'model', 'owner')
  if current[1] == S.QUEUED then
    expire(id, current[2])
    for _, v in ipairs({id, current[2], current[3] or ''}) do table.insert(expired, v) end
  else
    redis.call('ZREM', K.deadlines, id)
  end
end
return expired
