/**
 * QR codes for the terminal, so a phone can scan a share link off the
 * server's screen. A thin typed wrapper around the `qrcode` npm package
 * (its `terminal` renderer needs no canvas).
 * @module
 */

import QRCode from "qrcode";

interface QrToStringOptions {
  type: "terminal";
  small?: boolean;
  errorCorrectionLevel?: "L" | "M" | "Q" | "H";
}

const toString = (QRCode as {
  toString(text: string, options: QrToStringOptions): Promise<string>;
}).toString;

/**
 * Renders `text` as a QR code (error correction level M) in half-block
 * characters with ANSI colours, dark modules on a light background so it
 * scans on dark terminals too. Deterministic for a given text; no trailing newline.
 */
export async function terminalQr(text: string): Promise<string> {
  const qr = await toString(text, { type: "terminal", small: true, errorCorrectionLevel: "M" });
  return qr.trimEnd();
}
