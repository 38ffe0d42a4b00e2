// The notes' lower-level Node.js client: http.get with callbacks ('data', 'end'), the shape of
// the loop underneath fetch.
// `node http_get.mjs URL N sequential|concurrent` prints one JSON line (drive.mjs).
import http from 'node:http';
import { drive } from './drive.mjs';

function one(url) {
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

await drive('node http.get', one);
