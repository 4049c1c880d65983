local parts = redis.call('LRANGE', KEYS[1], 0, -1)
if #parts == 0 then return {0} end
redis.call('DEL', KEYS[1])
for i = 1, #parts - 2, 3 do
  local c = tonumber(redis.call('HGET', parts[i], parts[i + 1]))
  local a = tonumber(parts[i + 2])
  if c and a > 0 and c >= a then
    redis.call('HINCRBY', parts[i], parts[i + 1], '-' .. parts[i + 2])
  end
end
return {1}
