-- wrk script for every bench scenario. Arguments after `--`:
--   get PATH             GET PATH on every request
--   post CONTENT_ID      the legacy create (the shared post.lua body) into CONTENT_ID
--   postmany CONTENT_ID  the same create, each from an email of its own (reader<T>-<N>@...):
--                        the per-author lock (check and insert in one step) never queues
--   mix PATH CONTENT_ID  90 % GET PATH, 10 % create into CONTENT_ID (every 10th request)
--   v1mix PATH CONTENT_ID  the same with the v1 create (POST /api/v1/contents/ID/comments)
-- It counts the requests it issues, so the bench can prove exact metrics and persistence:
-- a server counts between wrk's completed requests and these issued ones (the difference
-- is what was in flight when wrk stopped). done() prints "bench-issued N posts M".
local mode = "get"
local get_req, post_req, post_headers, post_content
local threads = {}
thread_no = 0 -- set by setup(): emails of postmany are unique across threads
issued = 0 -- globals: done() reads them from each thread with thread:get()
posts = 0

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_no", #threads)
end

function init(args)
  mode = args[1] or "get"
  local path, content = args[2] or "/", args[2]
  if mode == "mix" or mode == "v1mix" then
    content = args[3]
  end
  get_req = wrk.format("GET", path, { Host = wrk.headers["Host"] })
  if mode == "v1mix" then
    post_req = wrk.format(
      "POST",
      "/api/v1/contents/" .. content .. "/comments",
      { Host = wrk.headers["Host"], ["Content-Type"] = "application/json" },
      '{"body":"first post!","email":"alice@example.com"}'
    )
  elseif mode == "postmany" then
    post_content = content
    post_headers = { Host = wrk.headers["Host"], ["Content-Type"] = "application/json" }
  elseif mode ~= "get" then
    local body = '{"email":"alice@example.com","comment":"first post!","content_id":"'
      .. content .. '"}'
    post_req = wrk.format(
      "POST",
      "/api/comment/new",
      { Host = wrk.headers["Host"], ["Content-Type"] = "application/json" },
      body
    )
  end
end

function request()
  issued = issued + 1
  if mode == "postmany" then
    posts = posts + 1
    return wrk.format(
      "POST",
      "/api/comment/new",
      post_headers,
      '{"email":"reader' .. thread_no .. "-" .. issued .. '@example.com","comment":"first post!",'
        .. '"content_id":"' .. post_content .. '"}'
    )
  end
  if mode == "post" or (mode ~= "get" and issued % 10 == 0) then
    posts = posts + 1
    return post_req
  end
  return get_req
end

function done(summary, latency, requests)
  local total_issued, total_posts = 0, 0
  for _, t in ipairs(threads) do
    total_issued = total_issued + t:get("issued")
    total_posts = total_posts + t:get("posts")
  end
  io.write(string.format("bench-issued %d posts %d\n", total_issued, total_posts))
end
