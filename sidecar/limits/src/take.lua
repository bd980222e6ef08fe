-- Takes hits on one or two rolling-minute counters at once, all or none: the org allowance
-- and a profile's limit of one decision. Each counter is a hash: field `h` the newest bucket
-- (100 ms, on this server's clock), `t` the hits in the live buckets, `o` at or before the
-- oldest non-empty live bucket, and one field per bucket holding its hits. A bucket leaves
-- the window 600 buckets (60 s) after it began, as in the sidecar's in-memory counters.
--
-- KEYS: the counters (1 or 2, in one hash slot).
-- ARGV[1..#KEYS]: their limits.
-- ARGV[#KEYS+1]  want: hits wanted (a block reserved ahead; at least 1 is taken when `lead` is 0)
-- ARGV[#KEYS+2]  divisor: a block is at most the smallest remaining / divisor
-- ARGV[#KEYS+3]  lead: 0 takes in the current bucket for a waiting request (at least one
--                hit or a refusal); 1 reserves in the next bucket (nothing when the
--                remaining budget is too small for a block: the request path then asks)
-- ARGV[#KEYS+4]  release_bucket, ARGV[#KEYS+5] release_n: hits of an earlier block that
--                were not used, given back first (0 for none)
--
-- Returns {taken, refused (1-based index of the counter at its limit, 0 for none),
--          remaining (smallest, after), reset_ms (until the oldest hit of the tightest
--          counter leaves), bucket (where the hits were counted), now_ms, tightest
--          (1-based index of the counter with the smallest remaining budget)}.

local n = #KEYS
local want = tonumber(ARGV[n + 1])
local divisor = tonumber(ARGV[n + 2])
local lead = tonumber(ARGV[n + 3])
local release_bucket = tonumber(ARGV[n + 4])
local release_n = tonumber(ARGV[n + 5])

local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local bucket = math.floor(now_ms / 100) + lead
local SPAN = 600

-- Moves counter `key` to bucket `to`, dropping the buckets that left the window.
local function advance(key, to)
  local h = tonumber(redis.call('HGET', key, 'h') or '-1')
  local t = tonumber(redis.call('HGET', key, 't') or '0')
  local o = tonumber(redis.call('HGET', key, 'o') or '0')
  if h >= to then
    return h, t, o
  end
  if t == 0 or h < 0 or to - h >= SPAN then
    redis.call('DEL', key)
    t = 0
  else
    for idx = math.max(h - SPAN + 1, o), to - SPAN do
      local c = tonumber(redis.call('HGET', key, idx) or '0')
      if c > 0 then
        t = t - c
        redis.call('HDEL', key, idx)
      end
    end
  end
  if o < to - SPAN + 1 then
    o = to - SPAN + 1
  end
  redis.call('HSET', key, 'h', to, 't', t, 'o', o)
  return to, t, o
end

-- Milliseconds until the oldest hit of `key` leaves the window (0 when empty).
local function reset_ms(key, h, t, o)
  if t <= 0 then
    return 0
  end
  while o < h and tonumber(redis.call('HGET', key, o) or '0') == 0 do
    o = o + 1
  end
  redis.call('HSET', key, 'o', o)
  local leaves = (o + SPAN) * 100
  if leaves < now_ms then
    return 0
  end
  return leaves - now_ms
end

local state = {}
for i = 1, n do
  local h, t, o = advance(KEYS[i], bucket)
  state[i] = {h = h, t = t, o = o}
end

-- Hits reserved earlier and not used go back to the bucket they were counted in, while it
-- is live.
if release_n > 0 then
  for i = 1, n do
    local s = state[i]
    if release_bucket > s.h - SPAN then
      local c = tonumber(redis.call('HGET', KEYS[i], release_bucket) or '0')
      local back = math.min(c, release_n)
      if back > 0 then
        redis.call('HINCRBY', KEYS[i], release_bucket, -back)
        s.t = s.t - back
        redis.call('HSET', KEYS[i], 't', s.t)
      end
    end
  end
end

local remaining = nil
local tightest = 1
for i = 1, n do
  local left = tonumber(ARGV[i]) - state[i].t
  if left <= 0 then
    return {0, i, 0, reset_ms(KEYS[i], state[i].h, state[i].t, state[i].o), bucket, now_ms, i}
  end
  if remaining == nil or left < remaining then
    remaining = left
    tightest = i
  end
end

local take = math.min(want, math.floor(remaining / divisor))
if lead == 0 and take < 1 then
  take = 1
end
if take < 1 then
  return {0, 0, remaining, 0, bucket, now_ms, tightest}
end
for i = 1, n do
  local s = state[i]
  if s.t == 0 or bucket < s.o then
    s.o = bucket
    redis.call('HSET', KEYS[i], 'o', bucket)
  end
  redis.call('HINCRBY', KEYS[i], bucket, take)
  s.t = s.t + take
  redis.call('HSET', KEYS[i], 't', s.t)
  redis.call('PEXPIRE', KEYS[i], 61000 + 100 * lead)
end
local s = state[tightest]
return {take, 0, remaining - take, reset_ms(KEYS[tightest], s.h, s.t, s.o), bucket, now_ms, tightest}
