-- Takes hits on up to three counters at once, all or none: the org allowance, a profile's
-- (or a consumer's) per-minute limit and a quota of one decision.
--
-- A rolling-minute counter is a hash: field `h` the newest bucket (100 ms, on this server's
-- clock), `t` the hits in the live buckets, `o` at or before the oldest non-empty live
-- bucket, and one field per bucket holding its hits. A bucket leaves the window 600 buckets
-- (60 s) after it began, as in the sidecar's in-memory counters.
--
-- A quota counter is a hash: `p` the calendar period (UTC) it counts, `t` its hits. Hits are
-- counted in the period their bucket begins in; the counter starts over with each period.
--
-- KEYS: the counters (1 to 3, in one hash slot).
-- ARGV[1..#KEYS]: their limits.
-- ARGV[#KEYS+1]  want: hits wanted (a block reserved ahead; at least 1 is taken when `lead` is 0)
-- ARGV[#KEYS+2]  divisor: a block is at most the smallest remaining / divisor
-- ARGV[#KEYS+3]  lead: 0 takes in the current bucket for a waiting request (at least one
--                hit or a refusal); 1 reserves in the next bucket (nothing when the
--                remaining budget is too small for a block: the request path then asks)
-- ARGV[#KEYS+4]  release_bucket, ARGV[#KEYS+5] release_n: hits of an earlier block that
--                were not used, given back first (0 for none)
-- ARGV[#KEYS+6..2*#KEYS+5]: each counter's span: 0 a rolling minute, 1 an hour, 2 a day,
--                3 a month (absent: 0)
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

local spans = {}
for i = 1, n do
  spans[i] = tonumber(ARGV[n + 5 + i] or '0')
end

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

-- Year and month of a day counted from 1970-01-01 (H. Hinnant's algorithm).
local function year_month(days)
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then
    y = y + 1
  end
  return y, m
end

-- Days from 1970-01-01 to the first of a month.
local function first_of(y, m)
  if m <= 2 then
    y = y - 1
  end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mm = m > 2 and m - 3 or m + 9
  local doy = math.floor((153 * mm + 2) / 5)
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

-- The calendar period of `span` holding `ms`, and when it ends (ms).
local function period(span, ms)
  if span == 1 then
    local p = math.floor(ms / 3600000)
    return p, (p + 1) * 3600000
  elseif span == 2 then
    local p = math.floor(ms / 86400000)
    return p, (p + 1) * 86400000
  end
  local y, m = year_month(math.floor(ms / 86400000))
  if m == 12 then
    return y * 12 + m - 1, first_of(y + 1, 1) * 86400000
  end
  return y * 12 + m - 1, first_of(y, m + 1) * 86400000
end

-- Moves quota counter `key` to the period of bucket `to`.
local function advance_period(key, span, to)
  local p = period(span, to * 100)
  local had = tonumber(redis.call('HGET', key, 'p') or '-1')
  if had >= p then
    return tonumber(redis.call('HGET', key, 't') or '0')
  end
  redis.call('DEL', key)
  redis.call('HSET', key, 'p', p, 't', 0)
  return 0
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
  if spans[i] > 0 then
    state[i] = {t = advance_period(KEYS[i], spans[i], bucket)}
  else
    local h, t, o = advance(KEYS[i], bucket)
    state[i] = {h = h, t = t, o = o}
  end
end

-- Milliseconds until counter `i` has room again.
local function reset(i)
  local s = state[i]
  if spans[i] > 0 then
    local _, ends = period(spans[i], bucket * 100)
    return math.max(ends - now_ms, 0)
  end
  return reset_ms(KEYS[i], s.h, s.t, s.o)
end

-- Hits reserved earlier and not used go back to the bucket they were counted in, while it
-- is live.
if release_n > 0 then
  for i = 1, n do
    local s = state[i]
    if spans[i] > 0 then
      -- Back to the period they were counted in, if it is still the current one.
      if period(spans[i], release_bucket * 100) == period(spans[i], bucket * 100) then
        local back = math.min(s.t, release_n)
        s.t = s.t - back
        redis.call('HSET', KEYS[i], 't', s.t)
      end
    elseif release_bucket > s.h - SPAN then
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
    return {0, i, 0, reset(i), bucket, now_ms, i}
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
  s.t = s.t + take
  if spans[i] > 0 then
    local _, ends = period(spans[i], bucket * 100)
    redis.call('HSET', KEYS[i], 't', s.t)
    redis.call('PEXPIREAT', KEYS[i], ends + 60000)
  else
    if s.t == take or bucket < s.o then
      s.o = bucket
      redis.call('HSET', KEYS[i], 'o', bucket)
    end
    redis.call('HINCRBY', KEYS[i], bucket, take)
    redis.call('HSET', KEYS[i], 't', s.t)
    redis.call('PEXPIRE', KEYS[i], 61000 + 100 * lead)
  end
end
return {take, 0, remaining - take, reset(tightest), bucket, now_ms, tightest}
