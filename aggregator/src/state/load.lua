-- AuditFlow detection state, read: everything the aggregator's cache needs of some state keys
-- (see redis.rs). ARGV[1] = key prefix, ARGV[2] = a fresh version token, then the keys
-- ("<rule>:<group>"). Per key it returns
--   { version, live members, their PTTL, used set, its PTTL, {cooldown ts, by}, its PTTL,
--     first-seen values, their PTTL }
-- with the live members as a flat member/score array, hashes as flat field/value arrays and a PTTL
-- of -2 for a key that does not exist. A key's parts are read in one script, so they are
-- consistent with the version returned.
--
-- State that has no version (written by an aggregator from before versions existed, or a
-- version key that expired first, which the TTLs rule out) is given one now, so that every
-- later change to it is seen by the replicas that cached it.
local prefix, token = ARGV[1], ARGV[2]
local out = {}
for i = 3, #ARGV do
  local key = ARGV[i]
  local zk, gk, nk, vk = prefix .. 'w:' .. key, prefix .. 'g:' .. key, prefix .. 'n:' .. key,
    prefix .. 'v:' .. key
  local hk = zk .. ':h'
  local v = redis.call('GET', vk)
  local z, zt = redis.call('ZRANGE', zk, 0, -1, 'WITHSCORES'), redis.call('PTTL', zk)
  local u, ut = redis.call('HGETALL', hk), redis.call('PTTL', hk)
  local g, gt = redis.call('HMGET', gk, 'ts', 'by'), redis.call('PTTL', gk)
  local n, nt = redis.call('HGETALL', nk), redis.call('PTTL', nk)
  if not v and (zt ~= -2 or ut ~= -2 or gt ~= -2 or nt ~= -2) then
    local most = math.max(zt, ut, gt, nt)
    -- A key without a TTL (-1) should not exist; the version then lasts as long as the
    -- longest TTL the aggregator sets (the dedup record's, 14 days).
    if zt == -1 or ut == -1 or gt == -1 or nt == -1 then most = 1209600000 end
    redis.call('SET', vk, token, 'PX', most)
    v = token
  end
  out[#out + 1] = { v or '', z, zt, u, ut, g, gt, n, nt }
end
return out
