// The notes' lower-level Node.js client: http.get with callbacks ('data', 'end'), the shape of
// the loop underneath fetch. `node http_get.mjs URL N sequential|concurrent` prints one JSON line.
import http from 'node:http';

const [url, n = '10', mode = 'concurrent'] = process.argv.slice(2);

function one() {
	return new Promise((resolve) => {
		http.get(url, { agent: false }, (resp) => {
			let data = '';
			// A chunk of data has been received.
			resp.on('data', (chunk) => { data += chunk; });
			// The whole response has been received.
			resp.on('end', () => resolve(resp.statusCode));
		}).on('error', (err) => resolve(err.code ?? err.message));
	});
}

const start = performance.now();
const statuses = [];
if (mode === 'sequential') {
	for (let i = 0; i < Number(n); i++) statuses.push(await one());
} else {
	statuses.push(...await Promise.all(Array.from({ length: Number(n) }, one)));
}
const wall_s = (performance.now() - start) / 1000;
console.log(JSON.stringify({ client: 'node http.get', mode, n: Number(n), ok: statuses.filter(s => s === 200).length, wall_s, statuses }));
