// Secure Pod formats for the browser (docs/SPEC.md), on WebCrypto only: one import for the page.
//
//   bytes.js       PodFormatError, hex/base64, labeledHash, fingerprint            (SPEC §1)
//   keys.js        user keys and bundles, .pub text, signatures in a context      (SPEC §1, §2.1)
//   hpke.js        HPKE base mode, DHKEM(P-256)/HKDF-SHA256/AES-256-GCM           (SPEC §3.1)
//   stream.js      STREAM, chunk by chunk with bounded memory                     (SPEC §3.2)
//   document.js    documents: seal to the pod, read headers, open delivered ones  (SPEC §3.3)
//   request.js     signed requests                                                (SPEC §4)
//   membership.js  the membership log: build, sign, replay                        (SPEC §5)
//   audit.js       audit entries, checkpoints, receipts                           (SPEC §6)

export * from './bytes.js';
export * from './keys.js';
export * from './hpke.js';
export * from './stream.js';
export * from './document.js';
export * from './request.js';
export * from './membership.js';
export * from './audit.js';
