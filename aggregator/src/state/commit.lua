-- AuditFlow detection state, write: applies what a batch changed in the aggregator's cache,
-- if and only if none of the state keys it read was changed by anyone else since (see
-- redis.rs). ARGV[1] = key prefix, ARGV[2] = the new version token, then one record per
-- state key "<rule>:<group>": the key, the version read ('' = none), then sections, each a
-- letter and its arguments, only those needed, applied in the order given, and '.':
--   A n score member...    live members to add or move (ZADD)
--   R n member...          live members to remove (ZREM; sent after A, so a set that keeps
--                          members is never emptied, which would delete it and its TTL)
--   Q n field...           used-set entries pruned (HDEL)
--   U n field time...      used-set entries added or moved (HSET): "=<member>" used up,
--                          "!<trigger>" a firing's trigger, "!" the newest time
--   P "(<µs>"              drop live members older than this
--   W ms                   TTL of the live and used sets
--   G ts by ms             the cooldown, and its TTL
--   V n value by...        first-seen values added (HSET)
--   N ms                   TTL of the first-seen values
--   S ms                   TTL of the version (else the version keeps its TTL)
-- A record with any section but S gets the new version. Returns an empty array when applied,
-- else the (1-based) numbers of the records whose key changed version; then nothing was
-- written, and the caller reads those keys again.
--
-- Cost: Redis's one thread runs this for every batch of every replica. Every argument costs a
-- Lua string and every redis.call about a microsecond of its own, so records carry only the
-- sections they need and TTLs are refreshed only when they have moved by a minute or more.
-- The used set is a hash, not a sorted set: the aggregator knows exactly which entries its
-- pruning dropped, and HSET/HDEL cost a fraction of ZADD/ZREMRANGEBYSCORE (about 0.3 against
-- 2 µs an entry here); used entries are ~4 in 5 of everything a batch writes.
local prefix, token = ARGV[1], ARGV[2]

-- Argument counts of each section: fixed, or 'n' items of one or two arguments.
local fixed = { P = 1, W = 1, G = 3, N = 1, S = 1 }
local items = { R = 1, A = 2, Q = 1, U = 2, V = 2 }

-- Commands with many arguments, in slices (Lua's unpack has a stack limit); `step` keeps
-- score/member pairs together.
local function bulk(cmd, key, flag, a, b, step)
  local slice = 1000 * step
  for s = a, b, slice do
    local e = math.min(s + slice - 1, b)
    if flag then
      redis.call(cmd, key, flag, unpack(ARGV, s, e))
    else
      redis.call(cmd, key, unpack(ARGV, s, e))
    end
  end
end

-- Pass 1: where each record starts, and whether every key still has the version read.
local starts, vkeys, expects = {}, {}, {}
local i = 3
while i <= #ARGV do
  starts[#starts + 1] = i
  vkeys[#vkeys + 1] = prefix .. 'v:' .. ARGV[i]
  expects[#expects + 1] = ARGV[i + 1]
  i = i + 2
  while ARGV[i] ~= '.' do
    local t = ARGV[i]
    if fixed[t] then
      i = i + 1 + fixed[t]
    elseif items[t] then
      local n = tonumber(ARGV[i + 1])
      if n == nil or n < 1 then return redis.error_reply('malformed commit: count at ' .. i) end
      i = i + 2 + n * items[t]
    else
      return redis.error_reply('malformed commit: section ' .. tostring(t) .. ' at ' .. i)
    end
    if i > #ARGV then return redis.error_reply('malformed commit: short record') end
  end
  i = i + 1
end
local stale = {}
for a = 1, #vkeys, 1000 do
  local got = redis.call('MGET', unpack(vkeys, a, math.min(a + 999, #vkeys)))
  for j = 1, #got do
    if (got[j] or '') ~= expects[a + j - 1] then stale[#stale + 1] = a + j - 1 end
  end
end
if #stale > 0 then return stale end

-- Pass 2: write.
for r, s in ipairs(starts) do
  local key = ARGV[s]
  local zk = prefix .. 'w:' .. key
  local hk = zk .. ':h'
  local wrote, vpx = false, nil
  local p = s + 2
  while ARGV[p] ~= '.' do
    local t = ARGV[p]
    if t == 'S' then
      vpx = ARGV[p + 1]
    else
      wrote = true
      if t == 'R' then
        bulk('ZREM', zk, nil, p + 2, p + 1 + tonumber(ARGV[p + 1]), 1)
      elseif t == 'A' then
        bulk('ZADD', zk, nil, p + 2, p + 1 + 2 * tonumber(ARGV[p + 1]), 2)
      elseif t == 'Q' then
        bulk('HDEL', hk, nil, p + 2, p + 1 + tonumber(ARGV[p + 1]), 1)
      elseif t == 'U' then
        bulk('HSET', hk, nil, p + 2, p + 1 + 2 * tonumber(ARGV[p + 1]), 2)
      elseif t == 'P' then
        redis.call('ZREMRANGEBYSCORE', zk, '-inf', ARGV[p + 1])
      elseif t == 'W' then
        redis.call('PEXPIRE', zk, ARGV[p + 1])
        redis.call('PEXPIRE', hk, ARGV[p + 1])
      elseif t == 'G' then
        local gk = prefix .. 'g:' .. key
        redis.call('HSET', gk, 'ts', ARGV[p + 1], 'by', ARGV[p + 2])
        redis.call('PEXPIRE', gk, ARGV[p + 3])
      elseif t == 'V' then
        bulk('HSET', prefix .. 'n:' .. key, nil, p + 2, p + 1 + 2 * tonumber(ARGV[p + 1]), 2)
      elseif t == 'N' then
        redis.call('PEXPIRE', prefix .. 'n:' .. key, ARGV[p + 1])
      end
    end
    if fixed[t] then p = p + 1 + fixed[t] else p = p + 2 + tonumber(ARGV[p + 1]) * items[t] end
  end
  if wrote then
    if vpx then
      redis.call('SET', prefix .. 'v:' .. key, token, 'PX', vpx)
    else
      redis.call('SET', prefix .. 'v:' .. key, token, 'KEEPTTL')
    end
  end
end
return {}
