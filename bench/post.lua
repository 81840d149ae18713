-- wrk script for the legacy create route, adapted from ../shared/bench/post.lua.
-- The content_id comes from the script argument (wrk ... -s post.lua URL -- CONTENT_ID)
-- so every measured run writes to its own content and its rows can be counted exactly.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"email":"alice@example.com","comment":"first post!","content_id":1}'

function init(args)
  if args[1] ~= nil then
    wrk.body = '{"email":"alice@example.com","comment":"first post!","content_id":"' .. args[1] .. '"}'
  end
end
