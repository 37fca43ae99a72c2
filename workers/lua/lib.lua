-- The prelude of every script. workers/store/scripts.py puts K (the key prefixes of workers/store/keys.py), S (the
-- job statuses) and MOVES (MOVES[from][to]: the name of each allowed move, from workers/job.py; from '': a new job)
-- and ENVELOPE (a job's Celery message, with @job@, @model@ and @tag@ to fill in) above it.
-- Every script takes ARGV[1]: the time ('' = Redis TIME, one clock for every host), ARGV[2]: the seconds a
-- finished job is kept; its own arguments follow from ARGV[3].

local function clock(given)
  if given ~= nil and given ~= '' then return tonumber(given) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local NOW = clock(ARGV[1])
local RETENTION = tonumber(ARGV[2])

local function stamp(t) return string.format('%.6f', t) end

local function stage_end(ago, floor)  -- when a stage ended, `ago` seconds before now ('' = unknown: nil); never
  if ago == nil or ago == '' then return nil end  -- before `floor` (the end of the stage before) nor after now
  return math.min(NOW, math.max(floor, NOW - tonumber(ago)))
end
local COLD_STARTS_KEPT = 10  -- the cold starts kept per model (sm:cold_starts)

-- The one writer of a job's status: the move from the status it has ('' if none) to `to` must be in MOVES, else
-- the script stops with a FORBIDDEN error before it writes anything more.
local function move(id, to)
  local from = redis.call('HGET', K.job .. id, 'status') or ''
  if not (MOVES[from] and MOVES[from][to]) then
    error({err = 'FORBIDDEN no move of job ' .. id .. ' from ' .. (from == '' and 'none' or from) .. ' to ' .. to})
  end
  redis.call('HSET', K.job .. id, 'status', to)
end

local function leads(token)  -- whether the caller leads the autoscalers now (every leader write asks)
  return token ~= '' and redis.call('GET', K.leader) == token
end

local function message(id, model, tag)  -- the job's Celery message
  local text = string.gsub(ENVELOPE, '@job@', id)
  text = string.gsub(text, '@model@', model)
  return (string.gsub(text, '@tag@', tag))
end

local function rank_of(id)  -- where the job stands in its model's queue: lower first (a string, as stored)
  local found = redis.call('HMGET', K.job .. id, 'rank', 'created_at')
  return found[1] or found[2]
end

local function send(id, model)  -- push the job's message onto the model's Celery queue, numbered (push)
  local n = redis.call('HINCRBY', K.job .. id, 'sends', 1)
  redis.call('LPUSH', K.celery .. model, message(id, model, id .. '.' .. n))
  redis.call('HSET', K.job .. id, 'push', redis.call('INCR', K.pushes .. model))
  redis.call('ZADD', K.sent .. model, NOW, id)
  redis.call('ZADD', K.sent_by_rank .. model, rank_of(id), id)
  redis.call('SADD', K.models, model)
end

local function wake(model)  -- tell the leading autoscaler the model may need capacity
  redis.call('RPUSH', K.scale, model)
  redis.call('LTRIM', K.scale, -100, -1)
end

-- The model's READY replicas by their free slots, in sm:ready:{model} and, by the host each runs on, in
-- sm:ready:{model}:{host}: each scored by its free slots negated (the jobs holding its slots less its concurrency),
-- so the first is the most free and a start or a finish never looks at the other replicas. Written only by
-- index_ready, after every change of a replica's state or slots: in while READY, out otherwise (or if `out`).
local function index_ready(rid, out)
  local r = redis.call('HMGET', K.replica .. rid, 'model', 'host', 'state', 'concurrency')
  if not r[1] then return end
  local all, here = K.ready .. r[1], K.ready .. r[1] .. ':' .. (r[2] or '')
  if r[3] == 'READY' and not out then
    local score = redis.call('SCARD', K.slots .. rid) - (tonumber(r[4]) or 1)
    redis.call('ZADD', all, score, rid)
    redis.call('ZADD', here, score, rid)
  else
    redis.call('ZREM', all, rid)
    redis.call('ZREM', here, rid)
  end
end

local function ready_replicas(model)
  return redis.call('ZCARD', K.ready .. model)
end

-- Free slots on READY replicas, less the jobs already sent.
local function free_slots(model)
  local free = 0
  local found = redis.call('ZRANGEBYSCORE', K.ready .. model, '-inf', '(0', 'WITHSCORES')
  for i = 2, #found, 2 do free = free - tonumber(found[i]) end
  return free - redis.call('ZCARD', K.sent .. model)
end

local function most_free(index, avoid)  -- the replica of the index with the most free slots, other than avoid
  local found = redis.call('ZRANGEBYSCORE', index, '-inf', '(0', 'LIMIT', 0, 2)
  if found[1] ~= avoid then return found[1] end
  return found[2]
end

-- A slot on the READY replica with the most free slots other than avoid (if given), on host `near` if one there
-- has one, else anywhere: {replica, endpoint}, or nil.
-- An entry whose record is not READY (the index never holds one; this keeps a start from routing to it if it
-- did) leaves the index, and the next is tried.
local function acquire(id, model, avoid, near)
  local here = (near and near ~= '') and K.ready .. model .. ':' .. near or nil
  while true do
    local index, best = here, here and most_free(here, avoid)
    if not best then index, best = K.ready .. model, most_free(K.ready .. model, avoid) end
    if best == nil then return nil end
    local r = redis.call('HMGET', K.replica .. best, 'state', 'endpoint')
    if r[1] == 'READY' then
      redis.call('SADD', K.slots .. best, id)
      index_ready(best)
      redis.call('HSET', K.job .. id, 'slot', best)
      return {best, r[2]}
    end
    redis.call('ZREM', index, best)
    index_ready(best)
  end
end

local function free_slot(id)  -- give back the slot the job holds; the replica it was on, or nil
  local slot = redis.call('HGET', K.job .. id, 'slot')
  if not slot then return nil end
  redis.call('SREM', K.slots .. slot, id)
  redis.call('HDEL', K.job .. id, 'slot')
  if redis.call('EXISTS', K.replica .. slot) == 1 then
    redis.call('HSET', K.replica .. slot, 'last_used', stamp(NOW))
    index_ready(slot)
  end
  return slot
end

local FAILURES_IN_A_ROW = 3  -- failed exchanges in a row after which a replica that still answers its probe goes

local function condemn(rid, reason)  -- a READY replica leaves routing: FAILED, stamped; stopped once let go of
  if redis.call('HGET', K.replica .. rid, 'state') == 'READY' then
    redis.call('HSET', K.replica .. rid, 'state', 'FAILED', 'reason', reason, 'failed_at', stamp(NOW))
    index_ready(rid)
  end
end

local function judged(rid, failed, reason)  -- an exchange ended: a failed one counts, an answered one clears
  if not failed then
    redis.call('HDEL', K.replica .. rid, 'failures')
    return
  end
  if redis.call('EXISTS', K.replica .. rid) == 0 then return end
  if redis.call('HINCRBY', K.replica .. rid, 'failures', 1) >= FAILURES_IN_A_ROW then
    condemn(rid, reason .. ' (' .. FAILURES_IN_A_ROW .. ' failed exchanges in a row)')
  end
end

local function park(id, model)  -- wait for capacity, holding nothing: no message out, no claim
  redis.call('ZREM', K.sent .. model, id)
  redis.call('ZREM', K.sent_by_rank .. model, id)
  redis.call('ZREM', K.leases, id)
  redis.call('HDEL', K.job .. id, 'claim', 'lease_until')
  redis.call('HSET', K.job .. id, 'parked_at', stamp(NOW))
  local since = redis.call('HMGET', K.job .. id, 'requeued_at', 'created_at')  -- a job run again waits afresh
  redis.call('ZADD', K.parked .. model, since[1] or since[2], id)
  redis.call('ZADD', K.parked_by_rank .. model, rank_of(id), id)
  redis.call('SADD', K.models, model)
  wake(model)
end

local function dispatch(model, count)  -- send up to count parked jobs, best-ranked first; how many were sent
  local sent = 0
  while sent < count do
    local best = redis.call('ZPOPMIN', K.parked_by_rank .. model)
    if #best == 0 then break end
    redis.call('ZREM', K.parked .. model, best[1])
    send(best[1], model)
    sent = sent + 1
  end
  return sent
end

local function unstarted(model, owner)  -- the owner's jobs of the model not started yet; nil without an owner
  if not owner or owner == '' then return nil end
  return K.unstarted .. model .. ':' .. owner
end

local function forget_waiting(id, model)  -- out of the model's sent and parked (and their ranks)
  redis.call('ZREM', K.sent .. model, id)
  redis.call('ZREM', K.parked .. model, id)
  redis.call('ZREM', K.sent_by_rank .. model, id)
  redis.call('ZREM', K.parked_by_rank .. model, id)
end

local function leave_queue(id, model)  -- the one place a job stops waiting: it starts, ends, or is taken back
  forget_waiting(id, model)
  redis.call('ZREM', K.low .. model, id)
  redis.call('ZREM', K.deadlines, id)
  redis.call('HDEL', K.job .. id, 'deadline')
  local mine = unstarted(model, redis.call('HGET', K.job .. id, 'owner'))
  if mine then redis.call('ZREM', mine, id) end
end

local function set_deadline(id)  -- a job queued (submitted or resubmitted) with a ttl must start by NOW + ttl
  local ttl = tonumber(redis.call('HGET', K.job .. id, 'ttl') or '')
  if not ttl then return end
  redis.call('HSET', K.job .. id, 'deadline', stamp(NOW + ttl))
  redis.call('ZADD', K.deadlines, NOW + ttl, id)
end

local function set_rank(id, model)  -- a job queued (submitted or resubmitted) stands at NOW less its offset
  local found = redis.call('HMGET', K.job .. id, 'offset', 'priority')
  redis.call('HSET', K.job .. id, 'rank', stamp(NOW - (tonumber(found[1] or '') or 0)))
  if found[2] == 'low' then redis.call('ZADD', K.low .. model, NOW, id) end
end

local function outranked(id, model)  -- better-ranked jobs sent take the free slots before this one
  local better = redis.call('ZCOUNT', K.sent_by_rank .. model, '-inf', '(' .. rank_of(id))
  return better > 0 and better >= free_slots(model) + redis.call('ZCARD', K.sent .. model)
end

local function overdue(id)  -- whether a waiting job is past its deadline
  local deadline = tonumber(redis.call('HGET', K.job .. id, 'deadline') or '')
  return deadline ~= nil and NOW >= deadline
end

local function requeue(id, model)  -- a RUNNING job waits again (its worker or replica was lost), holding nothing
  move(id, S.QUEUED)
  redis.call('HSET', K.job .. id, 'requeued_at', stamp(NOW))
  redis.call('SREM', K.running .. model, id)
  if redis.call('HGET', K.job .. id, 'priority') == 'low' then redis.call('ZADD', K.low .. model, NOW, id) end
end

local function running_reply(id, slot)  -- {'RUNNING', replica, endpoint, job fields ...}
  local reply = {S.RUNNING, slot[1], slot[2]}
  for _, v in ipairs(redis.call('HGETALL', K.job .. id)) do table.insert(reply, v) end
  return reply
end

local function begin_run(id, model, token, worker, lease, slot)  -- RUNNING on the slot under the claim
  local job = K.job .. id
  move(id, S.RUNNING)
  redis.call('HSET', job, 'claim', token, 'lease_until', stamp(NOW + lease),
             'worker', worker, 'started_at', stamp(NOW), 'replica', slot[1])
  local ready = tonumber(redis.call('HGET', K.replica .. slot[1], 'ready_at'))
  local since = redis.call('HMGET', job, 'created_at', 'requeued_at')  -- it waits since: submitted, or queued again
  if ready and ready > math.max(tonumber(since[1]) or NOW, tonumber(since[2]) or 0) then
    redis.call('HSET', job, 'cold_start', slot[1])  -- it waited for that replica's cold start
  else
    redis.call('HDEL', job, 'cold_start')
  end
  redis.call('HINCRBY', job, 'attempts', 1)
  leave_queue(id, model)
  redis.call('SADD', K.running .. model, id)
  redis.call('ZADD', K.leases, NOW + lease, id)
  return running_reply(id, slot)
end

local function retire(id)  -- a finished job holding no slot: no lease, and the record expires after the retention
  redis.call('ZREM', K.leases, id)  -- (unless its webhook is still to be delivered: then once it is, or given up)
  if redis.call('HGET', K.job .. id, 'webhook_status') ~= 'pending' then
    redis.call('EXPIRE', K.job .. id, RETENTION)
  end
  redis.call('EXPIRE', K.parts .. id, RETENTION)
end

local function streamed(id)  -- whether a run of the job committed parts already (it must not run again)
  return redis.call('EXISTS', K.parts .. id) == 1
end

local function count_span(model, span, seconds)  -- one job's span into the model's histogram (keys.py: sm:counts)
  if seconds ~= seconds or seconds < 0 then return end
  local bound = '+Inf'
  for _, b in ipairs(BOUNDS) do
    if seconds <= b then bound = tostring(b) break end
  end
  redis.call('HINCRBY', K.counts .. model, span .. ':' .. bound, 1)
  redis.call('HINCRBYFLOAT', K.counts .. model, span .. ':sum', seconds)
end

local function first_result(id, replica)  -- the first result on a replica of a job that waited for its cold start
  if redis.call('HGET', K.job .. id, 'cold_start') ~= replica then return end  -- ends that cold start (ready.lua)
  local r = redis.call('HMGET', K.replica .. replica, 'waited', 'ready_at', 'model', 'host')
  if not r[1] then return end
  redis.call('HDEL', K.replica .. replica, 'waited')
  redis.call('HSET', K.replica .. replica, 'first_result_at', stamp(NOW))
  local raw = redis.call('GET', K.cold_start .. replica)
  if not raw then return end
  local cold = cjson.decode(raw)
  cold.stages.first_result = math.max(0, NOW - tonumber(r[2]))
  cold.total = NOW - cold.started_at
  redis.call('SET', K.cold_start .. replica, cjson.encode(cold), 'KEEPTTL')
  count_span(r[3], 'cold_start:first_result:' .. (r[4] or ''), cold.stages.first_result)
  count_span(r[3], 'cold_start:total:' .. (r[4] or ''), cold.total)
end

local function refused(reason)  -- count a refused request (keys.py: sm:platform_counts); a full store still refuses
  redis.pcall('HINCRBY', K.platform_counts, 'refused:' .. reason, 1)
end

local function conclude(id, model, status, fields)  -- a job's last write: final status, fields, wake waiters; and
  local job = K.job .. id                             -- its webhook's delivery, in the same step; counted
  local was = redis.call('HMGET', job, 'status', 'created_at', 'started_at')
  local created, started = tonumber(was[2]), tonumber(was[3])
  redis.call('HINCRBY', K.counts .. model, 'finished:' .. status, 1)
  if created then count_span(model, 'total', NOW - created) end
  if was[1] == S.RUNNING and created and started then
    count_span(model, 'queue_wait', started - created)
    count_span(model, 'service', NOW - started)
  end
  move(id, status)
  redis.call('HSET', job, 'finished_at', stamp(NOW))
  if #fields > 0 then redis.call('HSET', job, unpack(fields)) end
  if status == S.SUCCEEDED and streamed(id) then  -- a streamed output is all its parts
    redis.call('HSET', job, 'output', '[' .. table.concat(redis.call('LRANGE', K.parts .. id, 0, -1), ',') .. ']')
  end
  redis.call('HINCRBY', job, 'commits', 1)
  leave_queue(id, model)
  redis.call('SREM', K.running .. model, id)
  local hook = redis.call('HGET', job, 'webhook')
  if hook then
    redis.call('HSET', job, 'webhook_status', 'pending', 'webhook_attempts', 0, 'webhook_since', stamp(NOW))
    redis.call('HDEL', job, 'webhook_error')
    redis.call('XADD', K.webhooks, '*', 'job', id)
  end
  if not redis.call('HGET', job, 'slot') then  -- a held slot keeps lease and record until given back
    if hook then redis.call('ZREM', K.leases, id) else retire(id) end
  end
  redis.call('RPUSH', K.done .. id, 1)
  redis.call('EXPIRE', K.done .. id, RETENTION)
end

local function fail(id, model, code, text, dead)  -- FAILED with an error; into the dead letters if dead
  conclude(id, model, S.FAILED, {'error', cjson.encode({code = code, message = text})})
  if dead then
    redis.call('LPUSH', K.dead, id)
    redis.call('LTRIM', K.dead, 0, 9999)
  end
end

local function fold(model, metric, sample, weight)  -- a finite, non-negative sample into a moving average
  sample = tonumber(sample)
  if sample == nil or sample ~= sample or sample < 0 or sample == math.huge then return end
  local key = K.stats .. model
  local old = tonumber(redis.call('HGET', key, metric))
  if old then sample = old + weight * (sample - old) end
  redis.call('HSET', key, metric, tostring(sample))
  redis.call('HINCRBY', key, metric .. '_samples', 1)
end

local function start_failure_since(model, since)  -- why the model's last start failed, if after since
  local f = redis.call('HMGET', K.start_failure .. model, 'at', 'reason')
  if f[1] and tonumber(f[1]) >= since then return f[2] end
  return nil
end

local function expire(id, model)  -- a job not started within its ttl: FAILED expired
  local ttl = redis.call('HGET', K.job .. id, 'ttl') or '?'
  fail(id, model, 'expired', 'not started within its ttl of ' .. ttl .. ' s', false)
end

local function owned(owner)  -- the owner's jobs by created_at
  return K.owned .. ((owner == nil or owner == '') and '-' or owner)
end

local function failed_deliveries(owner)  -- the owner's given-up webhook deliveries
  return K.webhooks_failed .. ((owner == nil or owner == '') and '-' or owner)
end
