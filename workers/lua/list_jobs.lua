-- The owner's jobs, newest first (GET /v1/jobs): its index (sm:owned) walked down from `before`, each record read
-- with HMGET, kept if of `model` and in `status`; an id whose record expired is skipped. Reads only, and looks at
-- no more than `look` entries, so one call is bounded however few of them match.
-- ARGV[3..]: owner ('' = no API keys), model ('' = any), status ('' = any), before (a created_at: only jobs created
-- before it; '' = the newest on), how many at most, how many entries to look at most.
-- Returns {next, then per job: id, model, status, created_at, started_at, finished_at, attempts, replica, error}
-- (a field not set is nil); next is the created_at to go on before ('' = no more), the index's score as Redis
-- writes it.
local owner, model, status, before = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local limit, look = tonumber(ARGV[7]), tonumber(ARGV[8])
local top = before == '' and '+inf' or '(' .. before
local entries = redis.call('ZREVRANGEBYSCORE', owned(owner), top, '-inf', 'WITHSCORES', 'LIMIT', 0, look)
local reply, found, next = {''}, 0, ''
for i = 1, #entries, 2 do
  local f = redis.call('HMGET', K.job .. entries[i], 'id', 'model', 'status', 'created_at', 'started_at',
                       'finished_at', 'attempts', 'replica', 'error')
  next = entries[i + 1]
  if f[1] and (model == '' or f[2] == model) and (status == '' or f[3] == status) then
    for j = 1, 9 do reply[#reply + 1] = f[j] end
    found = found + 1
    if found == limit then break end
  end
end
if found < limit and #entries < 2 * look then next = '' end  -- the walk reached the index's end
reply[1] = next
return reply
