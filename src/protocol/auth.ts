/**
 * The hello challenge of node-to-node and node-to-hub sessions: whoever opens a session
 * proves it knows the cluster secret with an HMAC-SHA256 over a fresh challenge, bound
 * to both ends' names so a proof cannot be replayed to another node.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { Random } from '../env/environment.js';

export function newChallenge(random: Random): string {
  return random.hex(32);
}

export function proofFor(secret: string, challenge: string, from: string, to: string): string {
  return createHmac('sha256', secret).update(`pbkv/1 ${challenge} ${from} ${to}`).digest('hex');
}

export function verifyProof(secret: string, challenge: string, from: string, to: string, proof: string): boolean {
  const expected = Buffer.from(proofFor(secret, challenge, from, to), 'hex');
  const given = Buffer.from(proof, 'hex');
  return given.length === expected.length && timingSafeEqual(given, expected);
}
