// placeholder: the Node.js runtime client is being written
