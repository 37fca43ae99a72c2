-- Forget the consumers of the deliverers' group that hold no entry and were idle longer than given (those of
-- gateway processes gone; a live deliverer reads every second). One step: a consumer that holds an entry keeps it.
-- ARGV[3..]: the group, milliseconds idle.
-- Returns how many were forgotten.
local group, idle = ARGV[3], tonumber(ARGV[4])
local forgotten = 0
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', K.webhooks, group)) do
  local fields = {}
  for i = 1, #consumer, 2 do fields[consumer[i]] = consumer[i + 1] end
  if tonumber(fields.pending) == 0 and tonumber(fields.idle) > idle then
    redis.call('XGROUP', 'DELCONSUMER', K.webhooks, group, fields.name)
    forgotten = forgotten + 1
  end
end
return forgotten
