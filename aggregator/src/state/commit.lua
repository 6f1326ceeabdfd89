-- AuditFlow detection state, write: applies what a batch changed in the aggregator's cache,
-- if and only if none of the state keys it read was changed by anyone else since (see
-- redis.rs). ARGV[1] = key prefix, ARGV[2] = the new version token, then one record per
-- state key "<rule>:<group>":
--   key  expected-version ('' = none)  version-PTTL ('' = leave the version alone)
--   n  member...            live members to remove (ZREM)
--   n  score member...      live members to add or move (ZADD)
--   n  score member...      used-set entries ("=<member>", "!<trigger>", "!" = newest time;
--                            ZADD GT: a time only moves forward)
--   horizon                 '' or "(<µs>": drop live and used entries older than it
--   window-PTTL             '' or ms, for the live and the used set
--   cooldown-ts cooldown-by cooldown-PTTL        ('' ts: unchanged)
--   n  value by...          first-seen values to add (HSET)
--   values-PTTL             '' or ms
-- Returns an empty array when applied, else the (1-based) numbers of the records whose key
-- changed version; then nothing was written, and the caller reads those keys again.
local prefix, token = ARGV[1], ARGV[2]

local function count(i)
  local n = tonumber(ARGV[i])
  if n == nil or n < 0 then error('malformed commit: count expected at ' .. i) end
  return n
end

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
  i = i + 3
  i = i + 1 + count(i)
  i = i + 1 + 2 * count(i)
  i = i + 1 + 2 * count(i)
  i = i + 2 + 3
  i = i + 1 + 2 * count(i)
  i = i + 1
end
if i ~= #ARGV + 1 then return redis.error_reply('malformed commit: short record') end
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
  local zk, gk, nk = prefix .. 'w:' .. key, prefix .. 'g:' .. key, prefix .. 'n:' .. key
  local uk = zk .. ':u'
  local vpx = ARGV[s + 2]
  local p = s + 3
  local n = tonumber(ARGV[p])
  if n > 0 then bulk('ZREM', zk, nil, p + 1, p + n, 1) end
  p = p + 1 + n
  n = tonumber(ARGV[p])
  if n > 0 then bulk('ZADD', zk, nil, p + 1, p + 2 * n, 2) end
  p = p + 1 + 2 * n
  n = tonumber(ARGV[p])
  if n > 0 then bulk('ZADD', uk, 'GT', p + 1, p + 2 * n, 2) end
  p = p + 1 + 2 * n
  if ARGV[p] ~= '' then
    redis.call('ZREMRANGEBYSCORE', zk, '-inf', ARGV[p])
    redis.call('ZREMRANGEBYSCORE', uk, '-inf', ARGV[p])
  end
  if ARGV[p + 1] ~= '' then
    redis.call('PEXPIRE', zk, ARGV[p + 1])
    redis.call('PEXPIRE', uk, ARGV[p + 1])
  end
  p = p + 2
  if ARGV[p] ~= '' then
    redis.call('HSET', gk, 'ts', ARGV[p], 'by', ARGV[p + 1])
    redis.call('PEXPIRE', gk, ARGV[p + 2])
  end
  p = p + 3
  n = tonumber(ARGV[p])
  if n > 0 then bulk('HSET', nk, nil, p + 1, p + 2 * n, 2) end
  p = p + 1 + 2 * n
  if ARGV[p] ~= '' then redis.call('PEXPIRE', nk, ARGV[p]) end
  if vpx ~= '' then redis.call('SET', prefix .. 'v:' .. key, token, 'PX', vpx) end
end
return {}
