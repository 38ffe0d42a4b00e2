// The course notes' Java NIO selector loop, completed into a small, correct HTTP/1.1 hello server:
// one thread, one Selector (epoll on Linux), every connection non-blocking -- the same shape as
// netlab's reactor model, in another language.
//
// What the notes' sketch left out, filled in here: accepting a connection and registering it
// for OP_READ; reading a request up to the blank line (\r\n\r\n), several if they arrive
// together; writing a fixed response with a Content-Length; keeping the connection open or
// closing it as HTTP/1.1 and HTTP/1.0 say (Connection: close / keep-alive); and finishing a
// response the socket would only take in part (OP_WRITE until it is all sent). The notes slept
// 1 ms when select() returned 0; select() blocks until something is ready, so no sleep is needed.
//
// Run: javac NioServer.java && java NioServer PORT   (port 0 = any free port; the first line
// printed names the port actually bound)

import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.util.Iterator;
import java.util.Set;

public class NioServer {
    static final String BODY = "Hello from netlab!\n";
    static final int MAX_HEAD = 8 * 1024;   // a longer request head: close (netlab answers 431)
    static final byte[] KEEP_ALIVE = response("keep-alive");
    static final byte[] CLOSE = response("close");

    static byte[] response(String connection) {
        return ("HTTP/1.1 200 OK\r\n"
                + "Content-Type: text/plain\r\n"
                + "Content-Length: " + BODY.length() + "\r\n"
                + "Connection: " + connection + "\r\n"
                + "\r\n" + BODY).getBytes(StandardCharsets.US_ASCII);
    }

    /** What one connection has read but not yet answered, and what it still has to send. */
    static final class Conn {
        ByteBuffer in = ByteBuffer.allocate(MAX_HEAD);
        ByteBuffer out = ByteBuffer.allocate(0);
        boolean closeAfterWrite;
    }

    public static void main(String[] args) throws IOException {
        int port = args.length > 0 ? Integer.parseInt(args[0]) : 2222;

        ServerSocketChannel channel = ServerSocketChannel.open();
        channel.bind(new InetSocketAddress("127.0.0.1", port), 4096);
        channel.configureBlocking(false);

        Selector selector = Selector.open();
        channel.register(selector, SelectionKey.OP_ACCEPT);
        int bound = ((InetSocketAddress) channel.getLocalAddress()).getPort();
        System.out.println("Listening on 127.0.0.1:" + bound);
        System.out.flush();

        while (true) {
            if (selector.select() == 0) {
                continue;
            }
            Set<SelectionKey> selectedKeys = selector.selectedKeys();
            Iterator<SelectionKey> keyIterator = selectedKeys.iterator();
            while (keyIterator.hasNext()) {
                SelectionKey selectionKey = keyIterator.next();
                keyIterator.remove();
                try {
                    if (!selectionKey.isValid()) {
                        continue;
                    }
                    if (selectionKey.isAcceptable()) {
                        // a connection was accepted by a ServerSocketChannel: take all that wait
                        accept(channel, selector);
                    } else {
                        if (selectionKey.isReadable()) {
                            // a channel is ready for reading
                            read(selectionKey);
                        }
                        if (selectionKey.isValid() && selectionKey.isWritable()) {
                            // a channel is ready for writing (a response did not fit at once)
                            write(selectionKey);
                        }
                    }
                } catch (IOException e) {
                    // the client reset the connection, or went away mid-response
                    close(selectionKey);
                }
            }
        }
    }

    static void accept(ServerSocketChannel channel, Selector selector) throws IOException {
        SocketChannel client;
        while ((client = channel.accept()) != null) {
            client.configureBlocking(false);
            client.setOption(java.net.StandardSocketOptions.TCP_NODELAY, true);
            client.register(selector, SelectionKey.OP_READ, new Conn());
        }
    }

    static void read(SelectionKey key) throws IOException {
        SocketChannel client = (SocketChannel) key.channel();
        Conn conn = (Conn) key.attachment();
        int n = client.read(conn.in);
        if (n < 0) {                        // the client closed its side
            close(key);
            return;
        }
        // answer every complete request head in the buffer (a client may send several at once)
        int start = 0;
        int end;
        byte[] buf = conn.in.array();
        int filled = conn.in.position();
        while (!conn.closeAfterWrite && (end = headEnd(buf, start, filled)) >= 0) {
            String head = new String(buf, start, end - start, StandardCharsets.ISO_8859_1);
            boolean keepAlive = keepAlive(head);
            queue(conn, keepAlive ? KEEP_ALIVE : CLOSE);
            conn.closeAfterWrite = !keepAlive;
            start = end;
        }
        // keep what is left of an incomplete request at the front of the buffer
        System.arraycopy(buf, start, buf, 0, filled - start);
        conn.in.position(filled - start);
        if (!conn.in.hasRemaining() && !conn.closeAfterWrite) {
            close(key);                     // a request head over MAX_HEAD: give up on it
            return;
        }
        if (conn.out.hasRemaining()) {
            write(key);
        }
    }

    /** Index just past the first \r\n\r\n at or after start, or -1. */
    static int headEnd(byte[] buf, int start, int limit) {
        for (int i = start; i + 3 < limit; i++) {
            if (buf[i] == '\r' && buf[i + 1] == '\n' && buf[i + 2] == '\r' && buf[i + 3] == '\n') {
                return i + 4;
            }
        }
        return -1;
    }

    /** HTTP/1.1 keeps the connection unless told "close"; HTTP/1.0 closes unless "keep-alive". */
    static boolean keepAlive(String head) {
        String lower = head.toLowerCase();
        int lineEnd = lower.indexOf("\r\n");
        boolean http11 = lower.substring(0, lineEnd).endsWith("http/1.1");
        int at = lower.indexOf("\r\nconnection:");
        if (at < 0) {
            return http11;
        }
        int valueEnd = lower.indexOf("\r\n", at + 2);
        String value = lower.substring(at + "\r\nconnection:".length(), valueEnd);
        if (value.contains("close")) {
            return false;
        }
        return http11 || value.contains("keep-alive");
    }

    static void queue(Conn conn, byte[] bytes) {
        ByteBuffer out = ByteBuffer.allocate(conn.out.remaining() + bytes.length);
        out.put(conn.out).put(bytes).flip();
        conn.out = out;
    }

    static void write(SelectionKey key) throws IOException {
        SocketChannel client = (SocketChannel) key.channel();
        Conn conn = (Conn) key.attachment();
        client.write(conn.out);
        if (conn.out.hasRemaining()) {
            key.interestOps(SelectionKey.OP_WRITE);     // the socket buffer is full: wait for room
            return;
        }
        if (conn.closeAfterWrite) {
            close(key);
        } else {
            key.interestOps(SelectionKey.OP_READ);
        }
    }

    static void close(SelectionKey key) {
        key.cancel();
        try {
            key.channel().close();
        } catch (IOException ignored) {
            // already gone
        }
    }
}
