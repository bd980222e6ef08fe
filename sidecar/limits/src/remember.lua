-- Remembers a signature against replay, for every replica: admitted once in the cluster.
--
-- KEYS[1]: the signature's entry (its profile, key and hash); KEYS[2], KEYS[3]: how many
--          signatures its key recorded in the current and the previous window (all three
--          share one hash tag, so one slot in a Redis Cluster).
-- ARGV[1]  ttl_ms: how long this signature must be remembered
-- ARGV[2]  budget: most live signatures one key may hold
-- ARGV[3]  window_ms: the longest any signature of the profile is remembered (the count
--          keys' window)
--
-- Returns 0: not seen before, now remembered; 1: seen (a replay); 2: the key holds its
-- budget of signatures (refused, fails closed; counted over two windows, so never fewer
-- than its live signatures).

local ttl = tonumber(ARGV[1])
local budget = tonumber(ARGV[2])
local window = tonumber(ARGV[3])

if redis.call('EXISTS', KEYS[1]) == 1 then
  return 1
end
local held = tonumber(redis.call('GET', KEYS[2]) or '0') + tonumber(redis.call('GET', KEYS[3]) or '0')
if held >= budget then
  return 2
end
redis.call('SET', KEYS[1], '1', 'PX', ttl)
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], 2 * window)
return 0
