-- The leader keeps the machines replicas may run on as it sees them now, stamped with the time; they expire, so
-- that a leader gone leaves no view that looks current.
-- ARGV[3..]: leader token, the hosts (a JSON list), seconds they are kept. Returns 1, or 0 if the caller no
-- longer leads.
local token, hosts, ttl = ARGV[3], ARGV[4], ARGV[5]
if not leads(token) then return 0 end
redis.call('HSET', K.hosts, 'seen_at', stamp(NOW), 'hosts', hosts)
redis.call('EXPIRE', K.hosts, ttl)
return 1
