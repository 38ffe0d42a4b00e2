// The course notes' Node.js client, pointed at a local server: fetch (built into Node 18+,
// where the notes import node-fetch) and async/await.
// `node fetch.mjs URL N sequential|concurrent` prints one JSON line (drive.mjs).
import { drive } from './drive.mjs';

async function one(url) {
	try {
		const response = await fetch(url);
		await response.text();
		return response.status;
	} catch (error) {
		return String(error.cause?.code ?? error.message);
	}
}

await drive('node fetch', one);
