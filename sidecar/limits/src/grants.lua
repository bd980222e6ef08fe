-- A Builtin provider's grants, for every replica (sidecar/limits/src/store/grants.rs). Every
-- key of one profile shares its hash tag: one slot in a Redis Cluster.
--
-- ARGV[1] is the operation:
--
-- load: KEYS: grant keys. Returns, for each, {version, document} or {} when there is none.
--
-- save: KEYS[1] the grant, KEYS[2] its user's index, KEYS[3] its client's index, KEYS[4] the
--   revocations. ARGV[2] the version the change was made on ('0': a new grant), ARGV[3] the new
--   version, ARGV[4] the document, ARGV[5] when the grant ends (Unix ms), ARGV[6] the grant id,
--   ARGV[7] how long the indexes are kept (ms). Returns 1 when taken; 0 when the grant changed
--   meanwhile, ended or was revoked (compare and set: two replicas redeeming one code, or
--   rotating one refresh token, cannot both win).
--
-- revoke: KEYS[1] the revocations, then per grant its key, its user's and its client's index.
--   ARGV[2] how long revocations are listed (ms), then the grant ids. Returns the store's time
--   (ms), the time of the revocations.
--
-- client: KEYS[1] the revocations. ARGV[2] a client id: its client-credentials tokens issued
--   until now are revoked. Returns the store's time (ms).
--
-- index: KEYS[1] an index. Returns its grant ids.
--
-- since: KEYS[1] the revocations. ARGV[2] a time (ms). Returns {now, member, score, ...}: every
--   revocation since then (members `g:<grant id>`, `c:<client id>`).

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local op = ARGV[1]
if op == 'load' then
  local out = {}
  for i, key in ipairs(KEYS) do
    local r = redis.call('HMGET', key, 'v', 'd')
    if r[1] then out[i] = {r[1], r[2]} else out[i] = {} end
  end
  return out
elseif op == 'save' then
  if redis.call('ZSCORE', KEYS[4], 'g:' .. ARGV[6]) then
    return 0
  end
  local current = redis.call('HGET', KEYS[1], 'v') or '0'
  if current ~= ARGV[2] then
    return 0
  end
  if tonumber(ARGV[5]) <= now_ms() then
    return 0
  end
  redis.call('HSET', KEYS[1], 'v', ARGV[3], 'd', ARGV[4])
  redis.call('PEXPIREAT', KEYS[1], ARGV[5])
  for i = 2, 3 do
    redis.call('SADD', KEYS[i], ARGV[6])
    redis.call('PEXPIRE', KEYS[i], ARGV[7])
  end
  return 1
elseif op == 'revoke' then
  local now = now_ms()
  for i = 3, #ARGV do
    local base = 2 + (i - 3) * 3
    redis.call('DEL', KEYS[base])
    redis.call('SREM', KEYS[base + 1], ARGV[i])
    redis.call('SREM', KEYS[base + 2], ARGV[i])
    redis.call('ZADD', KEYS[1], now, 'g:' .. ARGV[i])
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
  return now
elseif op == 'client' then
  local now = now_ms()
  redis.call('ZADD', KEYS[1], now, 'c:' .. ARGV[2])
  return now
elseif op == 'index' then
  return redis.call('SMEMBERS', KEYS[1])
elseif op == 'since' then
  local r = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[2], '+inf', 'WITHSCORES')
  table.insert(r, 1, tostring(now_ms()))
  return r
end
return redis.error_reply('unknown grants operation')
