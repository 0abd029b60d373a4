-- wrk script: HTTP/1.1 pipelining, 16 requests per write (workload 2).
-- wrk counts each response; latency is per batch (first request written -> response read).
local depth = 16
init = function(args)
   local r = {}
   for i = 1, depth do r[i] = wrk.format(nil, "/") end
   req = table.concat(r)
end
request = function()
   return req
end
