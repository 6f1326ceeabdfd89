-- AuditFlow detection state: applies a batch of ops atomically. The semantics mirror
-- aggregator/src/state/memory.rs exactly; the conformance suite runs both.
--
-- ARGV[1] = key prefix; then one record per op, window ops naming their window by the
-- number of a declaration earlier in the same call (1, 2, ... in order), so a batch sends each
-- window's key and parameters once instead of with each of its ops:
--   K key window count lateness ttl gate_key suppress                (declares a window)
--   W k member by ts                                                 (window)
--   F k member ts                                                    (sequence first step)
--   T k by ts                                                        (sequence closing step)
--   N key value by ts ttl gate_key suppress                          (new value)
--   G by ts gate_key suppress                                        (cooldown only)
-- Returns one integer per op (K records have none): n > 0 fired with n events, 0 quiet,
-- -1 late, -2 suppressed. Times are integers (µs) below 2^53; they go back to Redis as Lua
-- numbers, which redis.call formats exactly (%.17g), never through Lua's own number
-- formatting, which keeps only 14 digits.
--
-- Per window key zk: zk (live members, scored by time) and zk:u ("=<member>" for each member
-- used up by a firing, "!<trigger>" for each firing's trigger, and "!" — the trigger of no
-- event, since event keys are never empty — scored with the newest time ever added to the
-- window). Members are any value an event carries (distinct rules count values), hence the
-- "=": a value "!" or "!<key>" must not pass for the newest time or a trigger. A redelivered
-- used-up member is quiet and a redelivered trigger reports the same firing again.
-- (Before 2026-11-26 the newest time had a key of its own, zk:t, and used-up members had no
-- "=". Across that upgrade a window's first call does not see its old newest time, and an
-- event redelivered across it is not recognised as used up; the old keys expire by TTL.)
--
-- Cost: Redis's one thread is the ceiling of the cluster profile. Every redis.call costs
-- about a microsecond beyond its command, every argument of the call a fifth of one, and
-- string.format half of one, so the script sends each window's parameters once (K), and works
-- on each window a call touches in three steps instead of calling Redis per op: load (the live
-- members with one ZRANGE; every name the call's ops look up in zk:u, with the newest time,
-- in one ZMSCORE), evaluate every op in Lua, write back (one ZADD and one ZREM per set,
-- pruning, TTLs). Other clients cannot look in between (a script runs atomically), so the
-- verdicts are those of applying the ops one by one, as memory.rs does.
local prefix = ARGV[1]

-- Redis commands with many arguments, in slices (Lua's unpack has a stack limit).
local function bulk(cmd, key, args)
  for a = 1, #args, 1000 do
    redis.call(cmd, key, unpack(args, a, math.min(a + 999, #args)))
  end
end

-- The record sizes, by type.
local width = { K = 8, W = 5, F = 4, T = 4, N = 8, G = 5 }

-- Step 1: the windows this call touches, and the names its ops look up in their used sets.
-- A window: zk, uk, probe (names to look up: kinds and keys), then, once loaded, arr (live
-- members as {score, member}, ascending), sc (member -> score), used (member -> score in
-- zk:u), trig (trigger -> score), newest, horizon (nil: nothing pruned logically yet, so what
-- is stored is all live), and what to write back: dirty members, newly used entries, TTLs.
local wins, order, decls = {}, {}, {}
local function probe(w, kind, name)
  local seen = w.probed[kind]
  if not seen[name] then
    seen[name] = true
    w.probe[#w.probe + 1] = (kind == 't' and '!' or '=') .. name
    w.pkind[#w.pkind + 1] = kind
    w.pname[#w.pname + 1] = name
  end
end

local i = 2
while i <= #ARGV do
  local t = ARGV[i]
  local n = width[t]
  if n == nil then return redis.error_reply('unknown record ' .. tostring(t)) end
  if i + n - 1 > #ARGV then return redis.error_reply('short record ' .. t) end
  if t == 'K' then
    local key = ARGV[i + 1]
    local w = wins[key]
    if w == nil then
      local zk = prefix .. 'w:' .. key
      w = { zk = zk, uk = zk .. ':u', probe = { '!' }, pkind = { 'n' }, pname = { '' },
            probed = { t = {}, m = {} } }
      wins[key] = w
      order[#order + 1] = w
    end
    decls[#decls + 1] = {
      w = w, window = tonumber(ARGV[i + 2]), count = tonumber(ARGV[i + 3]),
      lateness = tonumber(ARGV[i + 4]), ttl = tonumber(ARGV[i + 5]), gkey = ARGV[i + 6],
      suppress = tonumber(ARGV[i + 7]),
    }
  elseif t == 'W' or t == 'F' or t == 'T' then
    local d = decls[tonumber(ARGV[i + 1])]
    if d == nil then return redis.error_reply('undeclared window ' .. ARGV[i + 1]) end
    if t == 'T' then
      probe(d.w, 't', ARGV[i + 2])
    else
      local member = ARGV[i + 2]
      local by = t == 'W' and ARGV[i + 3] or member
      probe(d.w, 't', by)
      if member == by then probe(d.w, 'm', member) end
    end
  end
  i = i + n
end

-- Load.
for _, w in ipairs(order) do
  w.used, w.trig = {}, {}
  for a = 1, #w.probe, 1000 do
    local got = redis.call('ZMSCORE', w.uk, unpack(w.probe, a, math.min(a + 999, #w.probe)))
    for j = 1, #got do
      if got[j] then
        local k, s = w.pkind[a + j - 1], tonumber(got[j])
        if k == 't' then
          w.trig[w.pname[a + j - 1]] = s
        elseif k == 'm' then
          w.used[w.pname[a + j - 1]] = s
        else
          w.newest = s
        end
      end
    end
  end
  local got = redis.call('ZRANGE', w.zk, 0, -1, 'WITHSCORES')
  w.arr, w.sc, w.stored = {}, {}, {}
  for j = 1, #got, 2 do
    local s = tonumber(got[j + 1])
    w.arr[#w.arr + 1] = { s, got[j] }
    w.sc[got[j]], w.stored[got[j]] = s, true
  end
  w.dirty, w.newly = {}, {}
end

local function live(w, score)
  return score ~= nil and (w.horizon == nil or score >= w.horizon)
end

-- First index in arr whose score is >= x (#arr + 1 if none).
local function lower(arr, x)
  local lo, hi = 1, #arr + 1
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if arr[mid][1] < x then lo = mid + 1 else hi = mid end
  end
  return lo
end

-- Removes arr[ja..jb], shifting what follows down (Redis's Lua 5.1 has no table.move).
local function cut(arr, ja, jb)
  local n, k = #arr, jb - ja + 1
  if k <= 0 then return end
  for j = ja, n - k do arr[j] = arr[j + k] end
  for j = n - k + 1, n do arr[j] = nil end
end

-- Sets member's score to s (only ever raised, like ZADD GT).
local function put(w, member, s)
  local old = w.sc[member]
  if old ~= nil then
    if s <= old then return end
    local j = lower(w.arr, old)
    while w.arr[j][2] ~= member do j = j + 1 end
    table.remove(w.arr, j)
  end
  table.insert(w.arr, lower(w.arr, s), { s, member })
  w.sc[member] = s
  w.dirty[member] = true
end

-- Moves w.arr[ja..jb] to the used set, with the firing's trigger.
local function use_up(w, ja, jb, by, ts, ttl)
  for j = ja, jb do
    local s, m = w.arr[j][1], w.arr[j][2]
    w.sc[m], w.dirty[m], w.used[m] = nil, true, s
    w.newly[#w.newly + 1] = { s, '=' .. m }
  end
  cut(w.arr, ja, jb)
  w.trig[by] = ts
  w.newly[#w.newly + 1] = { ts, '!' .. by }
  if w.used_ttl == nil or ttl > w.used_ttl then w.used_ttl = ttl end
end

local function window_add(d, member, by, ts, check)
  local w, window, count, lateness = d.w, d.window, d.count, d.lateness
  if live(w, w.trig[by]) then return count end
  if member == by and live(w, w.used[member]) then return 0 end
  if w.newest and ts < w.newest - window - lateness then return -1 end
  put(w, member, ts)
  if w.newest == nil or ts > w.newest then
    w.newest, w.advanced, w.horizon = ts, true, ts - window - lateness
    -- Everything older than the horizon is gone from now on (and from Redis when the call
    -- ends, by score).
    local k = lower(w.arr, w.horizon) - 1
    for j = 1, k do w.sc[w.arr[j][2]] = nil end
    cut(w.arr, 1, k)
  end
  if w.ttl == nil or d.ttl > w.ttl then w.ttl = d.ttl end
  if not check then return 0 end
  local lo = ts - window
  if w.horizon and lo < w.horizon then lo = w.horizon end
  local first = lower(w.arr, lo)
  local last = lower(w.arr, ts + window + 1) - 1
  for a = first, last do
    local b = a + count - 1
    if b > last then break end
    local sa, sb = w.arr[a][1], w.arr[b][1]
    if sb - sa <= window and sa <= ts and ts <= sb then
      local within = 0
      for c = a, last do
        if w.arr[c][1] <= sa + window then within = within + 1 else break end
      end
      -- Every member scored sa..sb (ties beyond b included), as ZRANGEBYSCORE would give.
      use_up(w, lower(w.arr, sa), lower(w.arr, sb + 1) - 1, by, ts, d.ttl)
      return within
    end
  end
  return 0
end

local function seq_then(d, by, ts)
  local w, count = d.w, d.count
  if live(w, w.trig[by]) then return count end
  local lo = ts - d.window
  if w.horizon and lo < w.horizon then lo = w.horizon end
  if lo > ts then return 0 end
  local ja, jb = lower(w.arr, lo), lower(w.arr, ts + 1) - 1
  local n = jb - ja + 1
  if n >= count then
    use_up(w, ja, jb, by, ts, d.ttl)
    return n
  end
  return 0
end

-- Cooldowns, read once per call and written when it ends (like the windows).
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

-- Step 2: evaluate, in order.
local out = {}
i = 2
while i <= #ARGV do
  local t = ARGV[i]
  if t == 'W' then
    local d, by, ts = decls[tonumber(ARGV[i + 1])], ARGV[i + 3], tonumber(ARGV[i + 4])
    local v = window_add(d, ARGV[i + 2], by, ts, true)
    out[#out + 1] = gated(v, d.gkey, d.suppress, by, ts)
  elseif t == 'F' then
    local member = ARGV[i + 2]
    out[#out + 1] = window_add(decls[tonumber(ARGV[i + 1])], member, member,
      tonumber(ARGV[i + 3]), false)
  elseif t == 'T' then
    local d, by, ts = decls[tonumber(ARGV[i + 1])], ARGV[i + 2], tonumber(ARGV[i + 3])
    out[#out + 1] = gated(seq_then(d, by, ts), d.gkey, d.suppress, by, ts)
  elseif t == 'N' then
    local hk = prefix .. 'n:' .. ARGV[i + 1]
    local value, by, ts = ARGV[i + 2], ARGV[i + 3], tonumber(ARGV[i + 4])
    local first = redis.call('HGET', hk, value)
    local v = 0
    if not first then
      redis.call('HSET', hk, value, by)
      v = 1
    elseif first == by then
      v = 1
    end
    redis.call('EXPIRE', hk, tonumber(ARGV[i + 5]))
    out[#out + 1] = gated(v, ARGV[i + 6], tonumber(ARGV[i + 7]), by, ts)
  elseif t == 'G' then
    out[#out + 1] = gated(1, ARGV[i + 3], tonumber(ARGV[i + 4]), ARGV[i + 1],
      tonumber(ARGV[i + 2]))
  end
  i = i + width[t]
end

-- Step 3: write back what the ops changed.
for _, k in ipairs(gate_order) do
  local g = gates[k]
  if g.ttl then
    redis.call('HSET', k, 'ts', g.ts, 'by', g.by)
    redis.call('EXPIRE', k, g.ttl)
  end
end
for _, w in ipairs(order) do
  local add, del = {}, {}
  for m in pairs(w.dirty) do
    local s = w.sc[m]
    if s ~= nil then
      add[#add + 1] = s
      add[#add + 1] = m
    elseif w.stored[m] then
      del[#del + 1] = m
    end
  end
  bulk('ZREM', w.zk, del)
  bulk('ZADD', w.zk, add)
  local used = {}
  for _, e in ipairs(w.newly) do
    if live(w, e[1]) then
      used[#used + 1] = e[1]
      used[#used + 1] = e[2]
    end
  end
  if w.advanced then
    used[#used + 1] = w.newest
    used[#used + 1] = '!'
  end
  bulk('ZADD', w.uk, used)
  if w.advanced then
    local horizon = '(' .. string.format('%.0f', w.horizon)
    redis.call('ZREMRANGEBYSCORE', w.zk, '-inf', horizon)
    redis.call('ZREMRANGEBYSCORE', w.uk, '-inf', horizon)
  end
  if w.ttl then redis.call('EXPIRE', w.zk, w.ttl) end
  local uttl = w.used_ttl
  if w.advanced and (uttl == nil or w.ttl > uttl) then uttl = w.ttl end
  if uttl then
    -- A sequence's closing step knows only its window, not the lateness the newest time
    -- needs: then the TTL may only grow.
    if w.advanced or w.newest == nil then
      redis.call('EXPIRE', w.uk, uttl)
    else
      redis.call('EXPIRE', w.uk, uttl, 'GT')
    end
  end
end
return out
