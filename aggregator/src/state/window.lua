-- AuditFlow detection state: applies a batch of ops atomically. The semantics mirror
-- aggregator/src/state/memory.rs exactly; the conformance suite runs both.
--
-- ARGV[1] = key prefix; then one record per op:
--   W key member by ts window count lateness ttl gate_key suppress   (window)
--   F key member ts window lateness ttl                              (sequence first step)
--   T key by ts window count ttl gate_key suppress                   (sequence closing step)
--   N key value by ts ttl gate_key suppress                          (new value)
--   G by ts gate_key suppress                                        (cooldown only)
-- Returns one integer per op: n > 0 fired with n events, 0 quiet, -1 late, -2 suppressed.
-- Times are integers (µs); they are formatted with %.0f before going back to Redis because
-- Lua's default number formatting keeps only 14 digits.
local prefix = ARGV[1]
local function num(x) return string.format('%.0f', x) end

-- Cooldowns, read once per call and written when it ends (like the windows below).
local gates, gate_order = {}, {}

local function gated(v, gkey, suppress, by, ts)
  if v <= 0 or gkey == '' then return v end
  local k = prefix .. 'g:' .. gkey
  local g = gates[k]
  if g == nil then
    local last = redis.call('HMGET', k, 'ts', 'by')
    g = { ts = tonumber(last[1] or ''), by = last[2] }
    gates[k] = g
    gate_order[#gate_order + 1] = k
  end
  if g.ts then
    if g.by == by then return v end
    if math.abs(ts - g.ts) < suppress then return -2 end
  end
  g.ts, g.by, g.ttl = ts, by, math.floor(suppress / 1000000) + 3600
  return v
end

-- Per window key zk: zk (members, scored by time), zk:u (members used up by a firing, and
-- "!<trigger>" for each firing's trigger), zk:t (the newest time ever added). A redelivered
-- used-up member is quiet and a redelivered trigger reports the same firing again.
--
-- Pruning is logical within a call and physical at its end: when an op moves a window's
-- newest time forward, everything older than the new horizon (newest - window - lateness)
-- counts as gone from then on (lookups compare scores with the horizon, ranges start at it),
-- and the entries are removed once, when the call ends, together with the window's newest
-- time and TTLs. Other clients cannot look in between (a script runs atomically), and the
-- verdicts are those of removing at once, as memory.rs does; this takes five Redis calls per
-- op out of eight.
local touched, order = {}, {}

-- What this call knows of window zk: newest time, horizon (nil: nothing pruned logically
-- yet, so what is stored is all live), TTLs to set at the end.
local function window_state(zk)
  local st = touched[zk]
  if st == nil then
    st = { newest = tonumber(redis.call('GET', zk .. ':t') or '') }
    touched[zk] = st
    order[#order + 1] = zk
  end
  return st
end

local function live(st, score)
  return score ~= nil and score ~= false and (st == nil or st.horizon == nil
    or tonumber(score) >= st.horizon)
end

local function use_up(zk, uk, a, b, by, ts)
  local got = redis.call('ZRANGEBYSCORE', zk, num(a), num(b), 'WITHSCORES')
  for j = 1, #got, 2 do redis.call('ZADD', uk, got[j + 1], got[j]) end
  redis.call('ZREMRANGEBYSCORE', zk, num(a), num(b))
  redis.call('ZADD', uk, num(ts), '!' .. by)
end

local function window_add(key, member, by, ts, window, count, lateness, ttl, check)
  local zk = prefix .. 'w:' .. key
  local uk = zk .. ':u'
  local st = window_state(zk)
  local seen = redis.call('ZMSCORE', uk, '!' .. by, member)
  if live(st, seen[1]) then return count end
  if member == by and live(st, seen[2]) then return 0 end
  local newest = st.newest
  if newest and ts < newest - window - lateness then return -1 end
  redis.call('ZADD', zk, 'GT', num(ts), member)
  if newest == nil or ts > newest then
    st.newest, st.advanced, st.horizon = ts, true, ts - window - lateness
  end
  st.ttl = ttl
  if not check then return 0 end
  local lo = ts - window
  if st.horizon and lo < st.horizon then lo = st.horizon end
  local got = redis.call('ZRANGEBYSCORE', zk, num(lo), num(ts + window), 'WITHSCORES')
  local s = {}
  for j = 2, #got, 2 do s[#s + 1] = tonumber(got[j]) end
  for a = 1, #s do
    local b = a + count - 1
    if b > #s then break end
    if s[b] - s[a] <= window and s[a] <= ts and ts <= s[b] then
      local within = 0
      for c = a, #s do
        if s[c] <= s[a] + window then within = within + 1 else break end
      end
      use_up(zk, uk, s[a], s[b], by, ts)
      st.used_ttl = ttl
      return within
    end
  end
  return 0
end

local function seq_then(key, by, ts, window, count, ttl)
  local zk = prefix .. 'w:' .. key
  local uk = zk .. ':u'
  local st = touched[zk]
  if live(st, redis.call('ZSCORE', uk, '!' .. by)) then return count end
  local lo = ts - window
  if st and st.horizon and lo < st.horizon then lo = st.horizon end
  if lo > ts then return 0 end
  local n = redis.call('ZCOUNT', zk, num(lo), num(ts))
  if n >= count then
    use_up(zk, uk, lo, ts, by, ts)
    redis.call('EXPIRE', uk, ttl)
    return n
  end
  return 0
end

-- The end of the call: what the ops above left to write.
local function settle()
  for _, k in ipairs(gate_order) do
    local g = gates[k]
    if g.ttl then
      redis.call('HSET', k, 'ts', num(g.ts), 'by', g.by)
      redis.call('EXPIRE', k, g.ttl)
    end
  end
  for _, zk in ipairs(order) do
    local st = touched[zk]
    if st.advanced then
      redis.call('SET', zk .. ':t', num(st.newest), 'EX', st.ttl)
      local horizon = '(' .. num(st.horizon)
      redis.call('ZREMRANGEBYSCORE', zk, '-inf', horizon)
      redis.call('ZREMRANGEBYSCORE', zk .. ':u', '-inf', horizon)
    end
    if st.ttl then redis.call('EXPIRE', zk, st.ttl) end
    if st.used_ttl then redis.call('EXPIRE', zk .. ':u', st.used_ttl) end
  end
end

local out = {}
local i = 2
while i <= #ARGV do
  local t = ARGV[i]
  local v
  if t == 'W' then
    local ts = tonumber(ARGV[i + 4])
    v = window_add(ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ts, tonumber(ARGV[i + 5]),
      tonumber(ARGV[i + 6]), tonumber(ARGV[i + 7]), tonumber(ARGV[i + 8]), true)
    v = gated(v, ARGV[i + 9], tonumber(ARGV[i + 10]), ARGV[i + 3], ts)
    i = i + 11
  elseif t == 'F' then
    v = window_add(ARGV[i + 1], ARGV[i + 2], ARGV[i + 2], tonumber(ARGV[i + 3]),
      tonumber(ARGV[i + 4]), 0, tonumber(ARGV[i + 5]), tonumber(ARGV[i + 6]), false)
    i = i + 7
  elseif t == 'T' then
    local ts = tonumber(ARGV[i + 3])
    v = seq_then(ARGV[i + 1], ARGV[i + 2], ts, tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5]),
      tonumber(ARGV[i + 6]))
    v = gated(v, ARGV[i + 7], tonumber(ARGV[i + 8]), ARGV[i + 2], ts)
    i = i + 9
  elseif t == 'N' then
    local hk = prefix .. 'n:' .. ARGV[i + 1]
    local value, by, ts = ARGV[i + 2], ARGV[i + 3], tonumber(ARGV[i + 4])
    local first = redis.call('HGET', hk, value)
    v = 0
    if not first then
      redis.call('HSET', hk, value, by)
      v = 1
    elseif first == by then
      v = 1
    end
    redis.call('EXPIRE', hk, tonumber(ARGV[i + 5]))
    v = gated(v, ARGV[i + 6], tonumber(ARGV[i + 7]), by, ts)
    i = i + 8
  elseif t == 'G' then
    v = gated(1, ARGV[i + 3], tonumber(ARGV[i + 4]), ARGV[i + 1], tonumber(ARGV[i + 2]))
    i = i + 5
  else
    return redis.error_reply('unknown op ' .. tostring(t))
  end
  out[#out + 1] = v
end
settle()
return out
