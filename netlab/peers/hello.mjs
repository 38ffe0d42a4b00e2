// The course notes' Node.js hello-world server, as netlab runs it: one thread, one event loop
// (libuv, which uses epoll on Linux), thousands of connections.
//
// Changed from the notes, and only this: the port comes from the command line (0 = any free
// port); the body is netlab's default body, sent with a Content-Length (without one, Node
// answers HTTP/1.1 in chunks and closes every HTTP/1.0 keep-alive connection, such as ab -k's);
// and the log line names the port actually bound, so netlab can start it on a free port.
import { createServer } from 'node:http';

const port = Number(process.argv[2] ?? process.env.PORT ?? 3000);
const body = 'Hello from netlab!\n';

const server = createServer((req, res) => {
	res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(body) });
	res.end(body);
});

server.listen(port, '127.0.0.1', () => {
	console.log(`Listening on 127.0.0.1:${server.address().port}`);
});
